"""A small photo-like `folder:` dataset written into a folder, for the tests of real image data.

Each class is a shape drawn on a background of random noise, at mixed sizes, saved the ways
photo folders hold them: RGB JPEGs, CMYK JPEGs (print workflows), RGB PNGs and grayscale PNGs.
With `broken=True` a few files that no reader can use are added beside them, one of each kind
ptflow tells apart (image_files.py): damaged (a truncated JPEG, a zero-byte file), not an image
(a text file named .jpg, PostScript named .png), a format outside the allow-list (.tif) and a
pixel bomb (a PNG whose header claims 100,000 x 100,000 pixels).

Tiny on purpose: 4 classes x 12 images of 16 to 40 pixels a side take about 0.1 s to write.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLASSES = ("circle", "cross", "square", "triangle")
# How each stored variant is saved: (PIL mode, format, suffix). Cycled through per class.
VARIANTS = (("RGB", "JPEG", ".jpg"), ("RGB", "PNG", ".png"), ("CMYK", "JPEG", ".jpg"), ("L", "PNG", ".png"))


@dataclass
class Photos:
    root: Path  # --dataset folder:ROOT
    classes: list[str]
    good: list[Path] = field(default_factory=list)
    bad: dict[Path, str] = field(default_factory=dict)  # file -> its kind: damaged, not an image, format, too large
    modes: dict[Path, str] = field(default_factory=dict)  # good file -> the PIL mode it was saved in


def write_photos(root: Path, per_class: int = 12, seed: int = 0, broken: bool | tuple[str, ...] = False,
                 split: bool = False) -> Photos:
    """Write the dataset under root (root/CLASS/NAME, or root/train/CLASS and root/test/CLASS with
    split, a quarter of each class in test). broken: True for every file of BROKEN, or some of
    their names; with split they alternate between train and test."""
    rng = np.random.default_rng(seed)
    photos = Photos(Path(root), list(CLASSES))
    for k, name in enumerate(CLASSES):
        for i in range(per_class):
            part = ("test" if i < per_class // 4 else "train") if split else ""
            folder = Path(root) / part / name
            folder.mkdir(parents=True, exist_ok=True)
            mode, form, suffix = VARIANTS[(i + k) % len(VARIANTS)]
            path = folder / f"{i:03d}{suffix}"
            _photo(rng, name, mode).save(path, format=form, **({"quality": 85} if form == "JPEG" else {}))
            photos.good.append(path)
            photos.modes[path] = mode
    names = tuple(BROKEN) if broken is True else tuple(broken or ())
    contents = _broken_contents(rng)
    for i, file_name in enumerate(names):
        label, kind = BROKEN[file_name]
        part = ("train", "test")[i % 2] if split else ""
        path = Path(root) / part / label / file_name
        path.write_bytes(contents[file_name])
        photos.bad[path] = kind
    return photos


def _photo(rng: np.random.Generator, shape: str, mode: str):
    """One picture: a light shape on a random noise background, of a random size."""
    from PIL import Image, ImageDraw

    width, height = (int(v) for v in rng.integers(16, 41, 2))
    noise = rng.integers(0, 110, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(170, 256, 3))
    side = min(width, height)
    x0, y0 = int(rng.integers(0, width - side // 2 + 1)), int(rng.integers(0, height - side // 2 + 1))
    box = (x0, y0, x0 + side // 2 - 1, y0 + side // 2 - 1)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    else:  # cross
        draw.line((box[0], box[1], box[2], box[3]), fill=colour, width=2)
        draw.line((box[0], box[3], box[2], box[1]), fill=colour, width=2)
    return image.convert(mode)


# The broken files: name -> (the class folder it goes into, its kind).
BROKEN = {
    "truncated.jpg": ("circle", "damaged"),  # cut short by a failed copy
    "empty.jpg": ("cross", "damaged"),  # zero bytes
    "notes.jpg": ("square", "not an image"),  # text
    "vector.png": ("triangle", "not an image"),  # PostScript: PIL's EPS plugin would run Ghostscript
    "scan.tif": ("circle", "format"),  # TIFF: PIL reads it, ptflow does not
    "bomb.png": ("square", "too large"),  # a header claiming 100,000 x 100,000 pixels
}


def _broken_contents(rng: np.random.Generator) -> dict[str, bytes]:
    from PIL import Image

    def encoded(image, form: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=form)
        return buffer.getvalue()

    jpeg = encoded(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB"), "JPEG")
    return {"truncated.jpg": jpeg[: len(jpeg) // 2], "empty.jpg": b"",
            "notes.jpg": b"shot on a sunny day, see the other folder\n",
            "vector.png": encoded(Image.new("L", (8, 8), 128), "EPS"),
            "scan.tif": encoded(Image.new("RGB", (8, 8), (1, 2, 3)), "TIFF"),
            "bomb.png": png_header(100_000, 100_000)}


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height gray pixels and holds one row: a bomb, read from its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


def write_large_photos(root: Path, per_class: int, size: int, classes: int = 2, seed: int = 0,
                       variants: int = 8) -> list[Path]:
    """per_class JPEGs of size x size pixels per class: smooth colour ramps with a bright square
    whose place says the class, a few kilobytes each on disk but size*size*3 bytes decoded, for
    the tests that need a dataset far larger decoded than on disk (streaming under a cap). Each
    class has `variants` distinct pictures, encoded once and written per_class times between them."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    written = []
    for k in range(classes):
        folder = Path(root) / f"class{k}"
        folder.mkdir(parents=True, exist_ok=True)
        encoded = []
        for _ in range(variants):
            tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
            pixels = (ramp[None, :, None] * tint + ramp[:, None, None] * (1 - tint)) / 2
            corner = size // 4 if k % 2 == 0 else size // 2
            pixels[corner:corner + size // 4, corner:corner + size // 4] = 255
            buffer = io.BytesIO()
            Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=75)
            encoded.append(buffer.getvalue())
        for i in range(per_class):
            path = folder / f"{i:04d}.jpg"
            path.write_bytes(encoded[i % variants])
            written.append(path)
    return written
