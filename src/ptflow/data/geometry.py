"""The size a photo becomes: `--image_size`, `--crop_pct`, `--interpolation`, and the evaluation transform.

A folder of photos holds images of every size; a network takes one. The evaluation transform is
the one timm and torchvision's references use: scale the image so that the crop covers
`crop_pct` of it (its shorter side becomes size / crop_pct), then cut the centre `size` out,
keeping the aspect ratio (a squashed face is not a face). The resize is bilinear or bicubic
(`--interpolation`: a timm model's own by default), both antialiased (Pillow's filters, which
torch's uint8 resize in crops.py reproduces). It is written in Pillow alone, so `ptflow predict`,
the server, the Python API and training all apply it without torchvision, and the model file
records it (style "crop", `crop_pct` and `interpolation`): the same file is the same input
everywhere. With crop_pct 1 and an image already of the size it is the identity.

Defaults, from the image headers (no pixel decoded): a folder whose images all have one size
keeps it (crop 1: nothing is lost, as before); a folder of mixed sizes becomes square at its
typical image's shorter side, at most 224 (timm's default size), cropped at 0.875 (timm's
default crop_pct): large enough to keep what the photos show, small enough to train on a CPU.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

DEFAULT_MAX_SIZE = 224  # the default side of a mixed-size folder's images, at most
DEFAULT_CROP_PCT = 0.875  # of a mixed-size folder (timm's default)
INTERPOLATIONS = ("bilinear", "bicubic")  # the resize filters: what Pillow and torch's uint8 resize share
# bilinear: the one resize before --interpolation existed, so runs and model files without it
# keep their pixels (a timm model's pretrained_cfg usually says bicubic: timm_models.py)
DEFAULT_INTERPOLATION = "bilinear"


@dataclass(frozen=True)
class Geometry:
    """What every image of a dataset becomes: channels x size, cropped at crop_pct."""

    channels: int  # 1 (gray) or 3 (RGB)
    size: tuple[int, int]  # (height, width)
    crop_pct: float = 1.0  # the share of the scaled image the centre crop keeps (1: all of its shorter side)
    interpolation: str = DEFAULT_INTERPOLATION  # one of INTERPOLATIONS

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def key(self) -> dict:
        """What a test split's fingerprint folds in of the geometry: bilinear, the resize of every
        run before --interpolation, adds nothing, so those runs keep their fingerprints."""
        fields = {"channels": self.channels, "size": list(self.size), "crop_pct": self.crop_pct}
        if self.interpolation != DEFAULT_INTERPOLATION:
            fields["interpolation"] = self.interpolation
        return fields


def choose(sizes: list[tuple[int, int]], gray: bool, image_size: int | None, crop_pct: float | None,
           interpolation: str | None = None) -> Geometry:
    """The geometry of a dataset whose images have these (height, width) sizes (from their
    headers); --image_size, --crop_pct and --interpolation, when given, win over the defaults."""
    same = len(set(sizes)) == 1
    if image_size is not None:
        size = (image_size, image_size)
    elif same:
        size = sizes[0]
    else:
        typical = int(statistics.median(min(s) for s in sizes))
        size = (min(typical, DEFAULT_MAX_SIZE),) * 2
    if crop_pct is None:
        crop_pct = 1.0 if same and image_size is None else DEFAULT_CROP_PCT
    return Geometry(1 if gray else 3, tuple(size), float(crop_pct), interpolation or DEFAULT_INTERPOLATION)


def resample(interpolation: str):
    """Pillow's filter of that name (one of INTERPOLATIONS)."""
    from PIL import Image

    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]


def scaled_size(width: int, height: int, size: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """(width, height) an image is resized to before the centre crop: the smallest scaling whose
    crop of `size` covers crop_pct of it along the side that limits it, the aspect ratio kept."""
    scale = max(size[0] / height, size[1] / width) / crop_pct
    return max(size[1], round(width * scale)), max(size[0], round(height * scale))


def crop_pixels(image, geometry: Geometry):
    """A gray or RGB PIL image (imaging.flatten's output) -> uint8 (channels, height, width)."""
    import numpy as np

    mode = "L" if geometry.channels == 1 else "RGB"
    image = image if image.mode == mode else image.convert(mode)  # convert() copies even to its own mode
    height, width = geometry.size
    if image.size != (width, height) or geometry.crop_pct != 1.0:
        new_w, new_h = scaled_size(image.width, image.height, geometry.size, geometry.crop_pct)
        if (new_w, new_h) != image.size:
            image = image.resize((new_w, new_h), resample(geometry.interpolation), reducing_gap=None)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if geometry.channels == 1 else array.transpose(2, 0, 1)


def draft(image, geometry: Geometry) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale (in libjpeg, before any pixel exists) when the
    result is still at least as large as the resize needs: 2-10x less decoding for a photo far
    larger than the network's input. The size compared is the larger side both ways round, so
    an EXIF rotation applied after decoding changes nothing."""
    if getattr(image, "format", None) != "JPEG":
        return
    new_w, new_h = scaled_size(image.width, image.height, geometry.size, geometry.crop_pct)
    side = max(new_w, new_h)
    if min(image.size) * 1.0 >= 2 * side:  # below 2x, no draft scale applies
        image.draft(image.mode, _draft_request(image.size, side))


def _draft_request(size: tuple[int, int], side: int) -> tuple[int, int]:
    """The size draft() is asked for: every side at least `side` pixels after scaling by the
    shorter side, so neither orientation ends up smaller than the resize needs."""
    scale = side / min(size)
    return (round(size[0] * scale) + 1, round(size[1] * scale) + 1)


def read_pixels(source, name: str, geometry: Geometry, max_pixels: int | None = None):
    """An image file's bytes or path -> uint8 (channels, height, width), as every reader makes it."""
    from ptflow.data.image_files import MAX_PIXELS, decode, open_image
    from ptflow.data.imaging import flatten

    image = open_image(source, name, max_pixels or MAX_PIXELS)
    draft(image, geometry)
    return crop_pixels(flatten(decode(image, name)), geometry)
