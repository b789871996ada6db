"""`ptflow data pack folder:SRC --out DIR`: a photo folder as WebDataset tar shards and an index.

Each example becomes two members of a shard: its image file's original bytes as `KEY.jpg` (the
suffix of the source file, lower-case) and its class index as `KEY.cls` (ASCII digits), KEY an
8-digit running number. That is the WebDataset layout, so other readers (the `webdataset`
library, tar itself) read the shards; ptflow reads them through index.json (formats/shards.py),
which says where each image's bytes are, so a shard is never scanned.

Packing is reproducible: the folder is listed in the order training lists it (formats/folder.py),
and the tar headers carry no time, owner or mode of the machine (mtime 0, uid/gid 0, mode 0644),
so the same folder packs to the same bytes. Every image is decoded once on the way: a broken file
stops the pack with one line naming it (as `--bad_images fail` does), rather than being found by
a training run later. The shards are written into a temporary folder beside DIR and renamed to
DIR at the end: DIR is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ptflow.console import info
from ptflow.data.formats.shards import INDEX, KIND, VERSION
from ptflow.errors import PtflowError, UsageError

DEFAULT_SHARD_SIZE = 10_000  # examples per shard: a few hundred MB of photos, a unit worth fetching whole
BLOCK = 512  # tar's block: headers and data are padded to it


def pack(source: str, out: str | os.PathLike, shard_size: int = DEFAULT_SHARD_SIZE) -> dict:
    """Write the shards of `source` (folder:PATH) into the new folder out; return its index."""
    from ptflow.data.bad_images import BadImages
    from ptflow.data.formats import folder

    prefix, _, path = source.partition(":")
    if prefix != "folder" or not path:
        raise UsageError(f"ptflow data pack: {source!r} is not a folder: dataset (give folder:PATH)")
    if shard_size < 1:
        raise UsageError(f"--shard_size {shard_size}: give at least 1 example per shard")
    out = Path(out)
    _check_out(out)
    if not Path(path).is_dir():
        raise PtflowError(f"{path}: not a folder")
    raw = folder.load(Path(path), bad_images=BadImages("fail", 0.0))
    parts = {"train": raw.x} if raw.x_test is None else {"train": raw.x, "test": raw.x_test}
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        index = _write_shards(work, raw.classes, parts, shard_size)
        _check_out(out)  # again: something may have been put there meanwhile
        if out.exists():
            out.rmdir()  # empty, as just checked
        os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        os.rename(work, out)
    except OSError as exc:
        raise PtflowError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone already when renamed
    info(f"packed {sum(index['counts'].values())} examples into {len(index['shards'])} shard(s) in {out}")
    return index


def _check_out(out: Path) -> None:
    if os.path.lexists(out) and not (out.is_dir() and not out.is_symlink()):
        raise UsageError(f"--out {out}: something that is not a folder is in the way")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out}: the folder exists and is not empty; give a new or empty folder")


def _write_shards(work: Path, classes: list[str], parts: dict, shard_size: int) -> dict:
    """Every split's examples in order, shard_size to a shard, shards numbered across the splits."""
    shards, splits, key = [], {}, 0
    for split, images in parts.items():
        splits[split] = []
        for start in range(0, len(images), shard_size):
            name = f"shard-{len(shards):06d}.tar"
            rows = _write_shard(work / name, images, range(start, min(start + shard_size, len(images))), key)
            key += len(rows)
            shards.append({"name": name, "count": len(rows), **_digest(work / name), "examples": rows})
            splits[split].append(name)
    index = {"format": KIND, "version": VERSION, "classes": classes, "splits": splits,
             "counts": {split: len(images) for split, images in parts.items()}, "shards": shards}
    (work / INDEX).write_text(json.dumps(index, separators=(",", ":")) + "\n", encoding="utf-8")
    return index


def _write_shard(file: Path, images, picks: range, first_key: int) -> list[list]:
    """One tar file; returns its examples as the index lists them:
    [offset of the image's data in the tar, its length, label, height, width, gray, member name]."""
    from ptflow.data.image_files import read_image

    rows = []
    with tarfile.open(file, "w", format=tarfile.USTAR_FORMAT) as tar:
        for j, i in enumerate(picks):
            name = images.files[i]
            data = _read(name)
            read_image(data, name).close()  # a file that cannot be decoded stops here, named
            key = f"{first_key + j:08d}"
            member = f"{key}{Path(name).suffix.lower()}"
            _add(tar, member, data)
            length = len(data)
            rows.append([tar.offset - _padded(length), length, int(images.y[i]), int(images.sizes[i][0]),
                         int(images.sizes[i][1]), bool(images.gray[i]), member])
            _add(tar, f"{key}.cls", str(int(images.y[i])).encode("ascii"))
    return rows


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    member = tarfile.TarInfo(name)
    member.size, member.mode, member.mtime = len(data), 0o644, 0
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    tar.addfile(member, io.BytesIO(data))


def _read(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise PtflowError(f"{name}: cannot read this file ({exc.strerror or exc})") from None


def _digest(file: Path) -> dict:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        os.fsync(f.fileno())  # on disk before the folder is renamed into place
    return {"sha256": digest.hexdigest(), "bytes": file.stat().st_size}


def _padded(length: int) -> int:
    return -(-length // BLOCK) * BLOCK


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
