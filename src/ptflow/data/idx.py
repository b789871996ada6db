"""The IDX four-file datasets (MNIST, Fashion-MNIST, KMNIST): find, download, validate, read.

Files are looked for, gzip or raw, in the user's data folder (and its `<name>/` and torchvision
`<Name>/raw/` layouts, so existing downloads are reused), then in the cache, then in system
locations; only then downloaded, with the official archive checksums verified.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import urllib.request
from pathlib import Path

import numpy as np

from ptflow.data.registry import IdxSpec
from ptflow.errors import PtflowError
from ptflow.files import atomic_write
from ptflow.sizes import check_declared

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ptflow"


def search_dirs(spec: IdxSpec, data_dir: str | None) -> list[Path]:
    """Folders searched in order; the first that holds all four files wins."""
    roots = [Path(d) for d in (data_dir, os.environ.get("PTFLOW_DATA_DIR")) if d]
    dirs = []
    for root in roots:
        dirs += [root, root / spec.name, root / spec.torchvision_name / "raw"]
    dirs.append(cache_dir() / spec.name)
    dirs += [Path(d) for d in spec.system_dirs]
    return dirs


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.is_file():
            return candidate
    return None


def locate(spec: IdxSpec, data_dir: str | None, download: bool = True) -> dict[str, Path]:
    """Paths of the four files, downloading them into the cache if no folder has them all."""
    stems = [s for pair in FILES.values() for s in pair]
    dirs = search_dirs(spec, data_dir)
    for folder in dirs:
        found = {stem: _find_file(folder, stem) for stem in stems}
        if folder == cache_dir() / spec.name:  # only verified downloads count there (see _download)
            found = {stem: path if path and _verified(spec, stem, path) else None for stem, path in found.items()}
        if all(found.values()):
            return found
    if download:
        try:
            return {stem: _download(spec, stem) for stem in stems}
        except DownloadError as exc:
            raise PtflowError(
                f"{spec.name}: looked for {', '.join(s + '[.gz]' for s in stems)} in "
                f"{'; '.join(str(d) for d in dirs)}, found no folder with all four, and the download "
                f"failed ({exc}); put the files in one of those folders or pass --data_dir DIR "
                f"(or set PTFLOW_DATA_DIR)"
            ) from None
    raise PtflowError(f"{spec.name}: files not found in {', '.join(map(str, dirs))}")


class DownloadError(Exception):
    """Every mirror failed; the message says how each one did."""


def _verified(spec: IdxSpec, stem: str, path: Path) -> bool:
    """Whether a cached archive is the official one: a file that fails is deleted and downloaded again."""
    if path.suffix != ".gz" or _md5(path) == spec.md5[stem]:
        return True
    path.unlink(missing_ok=True)
    return False


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # the published checksums are md5
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download(spec: IdxSpec, stem: str) -> Path:
    """Download one archive into a temporary file in the cache, verify its official md5, then
    rename it into place: an interrupted or wrong download never becomes a cached file."""
    target = cache_dir() / spec.name / (stem + ".gz")
    if target.is_file():
        return target
    errors = []
    for mirror in spec.mirrors:
        url = mirror + stem + ".gz"
        try:
            atomic_write(target, lambda tmp: _fetch(url, tmp, spec.md5[stem]))
            return target
        except (OSError, http.client.HTTPException, ValueError) as exc:  # network, HTTP, checksum
            errors.append(f"{url}: {exc}")
    raise DownloadError("; ".join(errors))


def _fetch(url: str, path: str, md5: str) -> None:
    """Stream url into path; a short body or a wrong checksum is an error (path is then discarded)."""
    from rich.progress import Progress  # only on the rare download path

    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=30) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with Progress(transient=True) as progress:
            task = progress.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=total)
            while chunk := response.read(1 << 16):  # a connection cut short raises IncompleteRead
                out.write(chunk)
                digest.update(chunk)
                progress.advance(task, len(chunk))
    if digest.hexdigest() != md5:
        raise ValueError(f"checksum {digest.hexdigest()} does not match {md5}")


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file of unsigned bytes, validating magic number, dimensions and size.

    The payload is read straight into the array's memory: no second copy of 47 MB of pixels.
    """
    compressed = path.suffix == ".gz"
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or not 1 <= magic[3] <= 4:
                raise PtflowError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
            header = f.read(4 * magic[3])
            if len(header) < 4 * magic[3]:
                raise PtflowError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{magic[3]}I", header)
            _check_dims(path, dims, 4 + len(header), compressed)
            array = np.empty(dims, dtype=np.uint8)
            got = f.readinto(memoryview(array).cast("B")) if array.size else 0
            if got != array.size or f.read(1):
                raise PtflowError(f"{path}: {'fewer' if got != array.size else 'more'} bytes than its header "
                                  f"{dims} says: truncated or corrupt")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise PtflowError(f"{path}: cannot read ({exc})") from None
    return array


def _check_dims(path: Path, dims: tuple[int, ...], header: int, compressed: bool) -> None:
    """The header's dimensions against the file's size, before the array is allocated.

    A raw file must hold exactly that many bytes; a gzip file can hold at most deflate's ratio
    more, and its trailer states the uncompressed size (modulo 2**32), which must agree.
    """
    declared = math.prod(dims)
    size = path.stat().st_size
    if not compressed:
        check_declared(str(path), declared, size - header)
        return
    check_declared(str(path), declared, size, compressed=True)
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        stated = int.from_bytes(f.read(4), "little")
    if stated != (header + declared) % (1 << 32):
        raise PtflowError(f"{path}: its header declares {dims} but the gzip trailer says {stated:,} bytes: "
                          f"truncated or corrupt")


def load(spec: IdxSpec, data_dir: str | None) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test): images (N, 1, H, W) uint8, labels int64."""
    paths = locate(spec, data_dir)
    arrays = []
    for images_stem, labels_stem in FILES.values():
        x = read_idx(paths[images_stem])
        y = read_idx(paths[labels_stem])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise PtflowError(f"{paths[images_stem]} and {paths[labels_stem]}: shapes {x.shape} and "
                              f"{y.shape} are not N images with N labels")
        if y.max(initial=0) >= len(spec.classes):
            raise PtflowError(f"{paths[labels_stem]}: label {y.max()} out of range for {spec.name}")
        arrays += [x[:, None], y.astype(np.int64)]
    return tuple(arrays)
