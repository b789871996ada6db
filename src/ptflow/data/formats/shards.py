"""`shards:DIR`: a folder of WebDataset tar shards and the index.json that `ptflow data pack` wrote.

Each shard holds, per example, the image file's original bytes as `KEY.jpg` (or .png...) and its
class index as `KEY.cls`. The index says, per example, where its image bytes are in its shard
(offset and length), its class and its header's size: so the shards are listed without being
opened, and each example is read by offset (records.ImageList.source), like a file of a
`folder:` dataset. The index is data, read as JSON and checked field by field: a shard is a plain
file name inside DIR (never a path, a `pipe:` command or a URL), nothing is unpickled, and only
image members are ever read (a `.pyd`, `.pickle` or `.pth` member is not).

Each shard's byte size is checked against the index when the dataset is loaded; its sha256 is
in the index for whoever copies the shards (`sha256sum`), not recomputed at every load: that
would read the whole dataset once more before training starts.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib stays off `ptflow --help`'s imports
    from pathlib import Path

from ptflow.data.formats import Format
from ptflow.errors import PtflowError

INDEX = "index.json"
KIND = "ptflow.shards"  # index.json's "format"
VERSION = 1
SPLITS = ("train", "test")
# A shard is named as pack names it, shard-000000.tar, or any plain name: no '/', no ':', no '..'.
SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.tar")
MEMBER_NAME = re.compile(r"[0-9]{1,20}\.([a-z0-9]{1,10})")  # KEY.ext of an image member
MAX_MEMBER_BYTES = 1 << 30  # one image's bytes; its pixels are limited again when decoded
SHA256 = re.compile(r"[0-9a-f]{64}")


def load(path: Path, target: str | None = None, bad_images=None):
    """The examples of the shards in path, listed (records.ImageList), with the index's split."""
    from ptflow.data.sources import RawData

    index = read_index(path)
    classes = index["classes"]
    parts = {split: _list_split(path, index, split, len(classes)) for split in index["splits"]}
    if bad_images is not None:  # the --max_bad_fraction ceiling is a share of every example
        bad_images.total = sum(len(x) for x in parts.values())
    x, x_test = parts["train"], parts.get("test")
    return RawData(x, x.y, classes, x_test=x_test, y_test=None if x_test is None else x_test.y)


def read_index(path: Path) -> dict:
    """index.json, parsed as JSON only and checked: every field's type and range, every shard's size."""
    import json
    import os

    from ptflow.files import open_regular
    from ptflow.sizes import MAX_INDEX_BYTES, check_declared

    file = path / INDEX
    try:
        with open(open_regular(file, os.O_RDONLY), "rb") as f:
            check_declared(str(file), os.fstat(f.fileno()).st_size, limit=MAX_INDEX_BYTES)
            text = f.read(MAX_INDEX_BYTES + 1)
    except OSError as exc:
        raise PtflowError(f"{file}: cannot read the shards' index ({exc.strerror or exc}); "
                          f"write the shards with `ptflow data pack`") from None
    try:
        index = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise PtflowError(f"{file}: not a valid JSON index ({type(exc).__name__})") from None
    _check_index(file, index)
    for shard in index["shards"]:
        _check_shard_file(path, shard)
    return index


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _check_index(file, index) -> None:
    from ptflow.sizes import MAX_CLASSES

    _expect(file, isinstance(index, dict), "not a JSON object")
    _expect(file, index.get("format") == KIND and _is_int(index.get("version")),
            f'not a shards index ("format" must be "{KIND}")')
    _expect(file, index["version"] == VERSION, f"version {index['version']} is not one this ptflow reads ({VERSION})")
    classes = index.get("classes")
    _expect(file, isinstance(classes, list) and 0 < len(classes) <= MAX_CLASSES
            and all(isinstance(c, str) for c in classes) and len(set(classes)) == len(classes),
            '"classes" must be a non-empty list of distinct names')
    shards = index.get("shards")
    _expect(file, isinstance(shards, list) and all(isinstance(s, dict) for s in shards), '"shards" must be a list')
    for shard in shards:
        _check_shard_entry(file, shard, len(classes))
    names = [s["name"] for s in shards]
    _expect(file, len(set(names)) == len(names), '"shards" names a shard twice')
    splits = index.get("splits")
    _expect(file, isinstance(splits, dict) and "train" in splits and set(splits) <= set(SPLITS),
            '"splits" must map "train" (and optionally "test") to lists of shard names')
    listed = [name for split in splits.values() for name in (split if isinstance(split, list) else [None])]
    _expect(file, sorted(listed, key=str) == sorted(names), '"splits" must name each shard of "shards" once')
    counts = index.get("counts")
    by_name = {s["name"]: s["count"] for s in shards}
    _expect(file, isinstance(counts, dict) and set(counts) == set(splits)
            and all(_is_int(counts[k]) and counts[k] == sum(by_name[n] for n in splits[k]) for k in splits),
            '"counts" must give each split\'s number of examples')
    _expect(file, counts["train"] > 0, "the train split has no examples")


def _check_shard_entry(file, shard: dict, n_classes: int) -> None:
    from ptflow.data.image_files import MAX_PIXELS

    name = shard.get("name")
    _expect(file, isinstance(name, str) and SHARD_NAME.fullmatch(name) is not None and ".." not in name,
            f"shard name {_shown(name)} is not a plain file name ending .tar")
    what = f"shard {name}"
    _expect(file, _is_int(shard.get("bytes")) and shard["bytes"] > 0, f'{what}: "bytes" must be a positive integer')
    _expect(file, isinstance(shard.get("sha256"), str) and SHA256.fullmatch(shard["sha256"]) is not None,
            f'{what}: "sha256" must be 64 hexadecimal digits')
    examples = shard.get("examples")
    _expect(file, isinstance(examples, list) and _is_int(shard.get("count")) and shard["count"] == len(examples),
            f'{what}: "count" must be the length of "examples"')
    end = 0
    for row in examples:
        _expect(file, isinstance(row, list) and len(row) == 7 and all(_is_int(v) for v in row[:5])
                and isinstance(row[5], bool) and isinstance(row[6], str),
                f"{what}: an example must be [offset, length, label, height, width, gray, member]")
        offset, length, label, height, width, _, member = row
        _expect(file, MEMBER_NAME.fullmatch(member) is not None and _is_image_name(member),
                f"{what}: member {_shown(member)} is not named as an image ptflow reads")
        _expect(file, offset >= end and offset % 512 == 0 and 0 < length <= MAX_MEMBER_BYTES
                and offset + length <= shard["bytes"],
                f"{what}: {member}'s offset and length are outside the shard or overlap another member")
        _expect(file, 0 <= label < n_classes, f"{what}: {member}'s class {label} is not one of the {n_classes}")
        _expect(file, height > 0 and width > 0 and height * width <= MAX_PIXELS,
                f"{what}: {member}'s size {height}x{width} is not an image size ptflow reads")
        end = offset + length


def _check_shard_file(path: Path, shard: dict) -> None:
    """The shard is a regular file inside path (not a link) of the size the index says."""
    import os
    import stat

    file = path / shard["name"]
    try:
        status = os.lstat(file)
    except OSError as exc:
        raise PtflowError(f"{file}: cannot read this shard ({exc.strerror or exc})") from None
    if not stat.S_ISREG(status.st_mode):
        raise PtflowError(f"{file}: not a regular file (a shard is read only as a plain file inside {path})")
    if status.st_size != shard["bytes"]:
        raise PtflowError(f"{file}: {status.st_size:,} bytes where the index says {shard['bytes']:,}: "
                          f"truncated or changed since it was packed")


def _list_split(path: Path, index: dict, split: str, n_classes: int):
    """The split's examples, in the order of its shards and of their members."""
    import numpy as np

    from ptflow.data.records import ImageList

    shards = {s["name"]: s for s in index["shards"]}
    files, rows, names = [], [], []
    for name in index["splits"][split]:
        for row in shards[name]["examples"]:
            files.append(str(path / name))
            rows.append(row[:6])
            names.append(f"{name}:{row[6]}")
    table = np.array(rows, dtype=np.int64).reshape(-1, 6)
    return ImageList(files, table[:, 2].copy(), table[:, 3:5].copy(), table[:, 5].astype(bool),
                     offsets=table[:, 0].copy(), lengths=table[:, 1].copy(), names=names)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(1 << 62) < value < (1 << 62)


def _is_image_name(member: str) -> bool:
    from ptflow.data.image_files import is_accepted_name

    return is_accepted_name(member)


def _shown(value) -> str:
    from ptflow.errors import shown

    return shown(value)


def _expect(file, condition: bool, problem: str) -> None:
    if not condition:
        raise PtflowError(f"{file}: {problem}")


FORMAT = Format("shards", "a folder of tar shards written by `ptflow data pack`", load, folder=True,
                reads_images=True)
