"""Image examples not yet decoded: where each one's bytes are, its label, and its size.

A folder of photos (formats/folder.py) or a set of tar shards (formats/shards.py) is listed, not
read: an `ImageList` holds, per example, the file its bytes are in (with an offset and a length
inside a shard), its class and its header's size and channels. Splitting cuts lists, not pixels;
then the examples are decoded either all at once into memory (`decode_all`, the fast path for
data that fits) or one at a time in DataLoader workers (streaming.py). Both decode through the
same function (geometry.read_pixels), so both paths see the same pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np


@dataclass
class ImageList:
    files: list[str]  # the file holding example i's bytes
    y: np.ndarray  # (N,) int64 class indices
    sizes: np.ndarray  # (N, 2) int64 (height, width) from the headers
    gray: np.ndarray  # (N,) bool: the image has one channel
    offsets: np.ndarray | None = None  # (N,) int64 where the bytes start in files[i] (shards), None: whole files
    lengths: np.ndarray | None = None  # (N,) int64 byte counts (shards)
    names: list[str] | None = None  # how messages name example i (a shard member), None: its file

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index) -> "ImageList":
        """The examples at index (an int array), in that order."""
        index = np.asarray(index, dtype=np.int64)
        pick = (lambda seq: [seq[i] for i in index]) if len(index) else (lambda seq: [])
        return replace(self, files=pick(self.files), y=self.y[index], sizes=self.sizes[index],
                       gray=self.gray[index],
                       offsets=None if self.offsets is None else self.offsets[index],
                       lengths=None if self.lengths is None else self.lengths[index],
                       names=None if self.names is None else pick(self.names))

    def __getitem__(self, part: slice) -> "ImageList":
        """A slice of the list (splits.py cuts the shuffled list as it cuts arrays)."""
        return self.subset(np.arange(len(self))[part])

    def name(self, i: int) -> str:
        return self.names[i] if self.names is not None else self.files[i]

    def source(self, i: int):
        """What geometry.read_pixels reads example i from: its path, or its bytes inside a shard."""
        if self.offsets is None:
            return self.files[i]
        import os

        from ptflow.errors import PtflowError
        from ptflow.files import open_regular

        try:
            with open(open_regular(self.files[i], os.O_RDONLY), "rb") as f:
                f.seek(int(self.offsets[i]))
                return f.read(int(self.lengths[i]))  # a shard cut short since: the decoder says truncated
        except OSError as exc:  # removed or replaced since it was listed
            raise PtflowError(f"{self.name(i)}: cannot read {self.files[i]} ({exc.strerror or exc})") from None

    def shard_numbers(self) -> np.ndarray | None:
        """Each example's shard, numbered in order of first appearance; None for whole files."""
        if self.offsets is None:
            return None
        _, first, numbers = np.unique(np.asarray(self.files), return_index=True, return_inverse=True)
        return np.argsort(np.argsort(first))[numbers].astype(np.int64)

    def fingerprint(self) -> str:
        """sha256 of what identifies the examples without reading them: names relative to the
        folder holding them all (a moved dataset keeps its fingerprint), header sizes, labels,
        byte counts in shards. A changed, added or removed file changes it."""
        import os

        names = [self.name(i) for i in range(len(self))]
        root = os.path.commonpath(names) if len(names) > 1 else os.path.dirname(names[0]) if names else ""
        digest = hashlib.sha256()
        for name in names:
            digest.update(os.path.relpath(name, root).encode("utf-8", "surrogateescape") + b"\0")
        digest.update(self.y.astype("<i8").tobytes())
        digest.update(self.sizes.astype("<i8").tobytes())
        if self.lengths is not None:
            digest.update(self.lengths.astype("<i8").tobytes())
        return digest.hexdigest()


def decode_all(images: ImageList, geometry, bad_images) -> tuple[np.ndarray, np.ndarray]:
    """Every example as uint8 pixels in one array, and their labels; an example that cannot be
    decoded stops here or is left out, as bad_images (a bad_images.BadImages) says."""
    from ptflow.data.geometry import read_pixels
    from ptflow.errors import PtflowError

    x = np.empty((len(images), *geometry.shape), np.uint8)
    keep = np.ones(len(images), bool)
    for i in range(len(images)):
        try:
            x[i] = read_pixels(images.source(i), images.name(i), geometry)
        except PtflowError as exc:
            bad_images.refuse(images.name(i), exc)
            keep[i] = False
    if keep.all():
        return x, images.y
    return np.ascontiguousarray(x[keep]), images.y[keep]
