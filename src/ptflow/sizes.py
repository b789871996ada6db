"""Every size a file declares, checked against the file's real size or a stated limit first.

File formats declare sizes in a few header bytes (IDX dimensions, the shapes of the arrays in
an .npz, zip entries of a .pth, a safetensors header, a model's layer sizes in its metadata).
A corrupt or hostile file can declare gigabytes in a kilobyte, and the reader would allocate
them before reading a byte of data. So every reader asks here before it allocates: a declared
size must fit in the bytes really there (times deflate's largest expansion when the bytes are
compressed) and under the limits below. The readers: data/idx.py, data/readers.py (npz, CSV),
data/formats/folder.py (image folders), models/files.py (model files and checkpoints), models/registry.py
(layer sizes, counted on the meta device), cli/configfile.py and --model_args (nesting).

Pure standard library: the CLI's flag parsing uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptflow.errors import PtflowError, UsageError

if TYPE_CHECKING:  # zipfile is imported where used: the CLI's flag parsing imports this module
    import zipfile

# Deflate cannot expand data by more than this ratio (258-byte matches coded in 2 bits, about
# 1032:1), so no honest compressed entry declares more than this many bytes per compressed byte.
DEFLATE_RATIO = 1032
MAX_ARRAY_BYTES = 16 << 30  # one array from a file: more than most machines hold, as a floor for mistakes
MAX_DATASET_BYTES = 16 << 30  # all images of a folder: dataset, decoded (ptflow keeps datasets in memory)
MAX_PARAMETERS = 1 << 30  # one model: 4 GiB of float32 weights, 16 GiB with Adam's state while training
MAX_HEADER_BYTES = 100 << 20  # a safetensors JSON header (the safetensors library's own limit)
MAX_INDEX_BYTES = 1 << 30  # a shards index.json: about 60 bytes per example, so some 15 million examples
MAX_CONFIG_BYTES = 1 << 20  # a --config file: a flat mapping of options is a few kilobytes
MAX_NESTING = 32  # lists and mappings inside each other, in config files, --model_args and model metadata
MAX_NODES = 100_000  # values in one such structure, counting a value again each time it is reused
MAX_CLASSES = 1_000_000  # classes of one model: a dataset's distinct labels, and a model file's class names


def check_declared(what: str, declared: int, real: int | None = None, *, compressed: bool = False,
                   limit: int = MAX_ARRAY_BYTES) -> None:
    """Refuse `declared` bytes that the `real` bytes of the file cannot hold, or above `limit`."""
    if declared < 0:
        raise PtflowError(f"{what}: declares a negative size: corrupt")
    if real is not None:
        room = real * DEFLATE_RATIO if compressed else real
        if declared > room:
            kind = "compressed " if compressed else ""
            raise PtflowError(f"{what}: declares {declared:,} bytes of data but holds only {real:,} {kind}bytes: "
                              f"truncated or corrupt")
    if declared > limit:
        raise PtflowError(f"{what}: declares {declared:,} bytes, more than the {limit:,} ptflow reads")


def check_zip(what: str, archive: zipfile.ZipFile, real: int, stored_only: bool = False) -> None:
    """Each zip entry's declared size against its compressed bytes, and their sum against the limit.

    stored_only: torch.save writes its entries uncompressed, so a .pth with a compressed entry was
    not written by torch.save.
    """
    import zipfile

    total = 0
    for entry in archive.infolist():
        if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or \
                (stored_only and entry.compress_type != zipfile.ZIP_STORED):
            raise PtflowError(f"{what}: entry {entry.filename!r} is compressed in a way this file type never "
                              f"is: not a file ptflow reads")
        if entry.header_offset + entry.compress_size > real:
            raise PtflowError(f"{what}: entry {entry.filename!r} reaches past the end of the file: truncated")
        stored = entry.compress_type == zipfile.ZIP_STORED
        if stored and entry.file_size != entry.compress_size:
            raise PtflowError(f"{what}: entry {entry.filename!r} declares {entry.file_size:,} bytes in "
                              f"{entry.compress_size:,}: corrupt")
        check_declared(f"{what}: entry {entry.filename!r}", entry.file_size, entry.compress_size,
                       compressed=not stored)
        total += entry.file_size
    check_declared(what, total)


def check_structure(value, what: str, error=UsageError) -> None:
    """Refuse nesting deeper than MAX_NESTING or more than MAX_NODES values (YAML aliases count
    each time they are used: a 'billion laughs' file is a few lines that expand without end)."""
    budget = [MAX_NODES]

    def walk(item, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise error(f"{what}: more than {MAX_NODES:,} values")
        if isinstance(item, (list, tuple, dict)):
            if depth >= MAX_NESTING:
                raise error(f"{what}: nested more than {MAX_NESTING} levels deep")
            for child in (item.values() if isinstance(item, dict) else item):
                walk(child, depth + 1)

    walk(value, 0)
