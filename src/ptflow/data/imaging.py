"""Turning an image into a model input: one function for `ptflow predict`, the API and the server.

Files are opened by image_files.py (which formats, how many pixels); this module converts pixels.

Styles, chosen by the dataset a model was trained on:
- "digit" (MNIST, KMNIST, digits): grayscale, inverted when the background is light, cropped to
  the ink, scaled so its longer side is 20/28 of the input, centred by centre of mass, the way
  MNIST itself was made.
- "object" (Fashion-MNIST): the same, but scaled to fill the whole input.
- "resize" (arrays of images of your own, and folders before --image_size): converted to the
  model's channels and resized to its input.
- "crop" (image files: folder:, shards:): geometry.py's evaluation transform, scaled so that the
  centre crop keeps the model file's `crop_pct` of the image, the aspect ratio kept, resized by its
  `interpolation` (bilinear where a file from before that key names none). At run time the style,
  its share and its filter travel as one string, "crop:0.875:bicubic" (`style_of(meta)`).

Whatever the style, an image first becomes 8-bit gray or RGB the same way (`flatten`), at
training time (`folder:` datasets) and at prediction: turned upright by its EXIF orientation,
transparency composited onto white (what a viewer shows), 16-bit and float pixels brought to
0..255, palette, CMYK, YCbCr, HSV and LAB images converted. The same file is the same input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptflow.data.image_files import read_image
from ptflow.errors import PtflowError

GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}  # and every "I;16..." mode: one channel


def channels_of(image) -> int:
    """1 for grayscale images (with or without transparency, any depth), 3 for everything else."""
    return 1 if image.mode in GRAY_MODES or image.mode.startswith("I;16") else 3


def flatten(image):
    """Any PIL image -> an upright 8-bit "L" or "RGB" image, as a viewer would show it."""
    from PIL import Image, ImageOps

    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: a copy of every photo costs ~1 ms at 512x512
    except Exception:  # a damaged EXIF block: keep the pixels as stored (the same here and in training)
        pass
    mode = image.mode
    try:
        if mode.startswith("I") or mode == "F":  # 16/32-bit integers or floats: scale into 0..255
            return Image.fromarray(_to_bytes(np.asarray(image)), "L")
        if mode == "LAB":
            from PIL import ImageCms

            to_srgb = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                              "LAB", "RGB")
            return ImageCms.applyTransform(image, to_srgb)
        if "A" in mode or "a" in mode or "transparency" in image.info:
            gray = channels_of(image) == 1
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("L" if gray else "RGB")
        return image if mode in ("L", "RGB") else image.convert("L" if channels_of(image) == 1 else "RGB")
    except (ValueError, OSError, ImportError) as exc:  # a mode Pillow cannot convert, or no LittleCMS for LAB
        raise PtflowError(f"images of mode {mode} cannot be read as gray or RGB ({type(exc).__name__})") from None


def _to_bytes(pixels: np.ndarray) -> np.ndarray:
    """16-bit pixels keep their top 8 bits; floats in 0..1 are scaled to 0..255; anything else is clipped."""
    if pixels.dtype.kind == "f":
        pixels = np.nan_to_num(pixels.astype(np.float64))
        scale = 255.0 if pixels.size and 0 <= pixels.min() and pixels.max() <= 1 else 1.0
        return np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
    pixels = pixels.astype(np.int64)
    if pixels.size and pixels.max() > 255:
        pixels = np.clip(pixels, 0, 65535) >> 8
    return np.clip(pixels, 0, 255).astype(np.uint8)


def to_pixels(image, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """PIL image -> uint8 (channels, height, width), resized to size (height, width) if given.

    The one conversion of the "resize" style, for `folder:` datasets at training time and for
    their models at prediction time.
    """
    image = flatten(image).convert("L" if channels == 1 else "RGB")
    if size is not None and (image.height, image.width) != tuple(size):
        image = image.resize((size[1], size[0]))
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def style_of(meta: dict) -> str:
    """The style a model file's metadata names, with its crop share and filter for "crop"
    ("crop:0.875:bicubic")."""
    style = meta.get("image_style") or "resize"
    if style != "crop":
        return style
    return f"crop:{float(meta.get('crop_pct', 1.0))!r}:{interpolation_of(meta)}"


def interpolation_of(meta: dict) -> str | None:
    """The resize filter of a model file's crop style (schema.py checked it is one of
    geometry.INTERPOLATIONS); bilinear for files from before the key; None for other styles."""
    from ptflow.data.geometry import DEFAULT_INTERPOLATION

    if meta.get("image_style") != "crop":
        return None
    return meta.get("interpolation") or DEFAULT_INTERPOLATION


def to_input(image, input_shape: tuple[int, ...], style: str) -> np.ndarray:
    """PIL image -> uint8 array of shape input_shape (C, H, W)."""
    if len(input_shape) != 3:
        raise PtflowError(f"this model takes {tuple(input_shape)} feature vectors, not images")
    channels, height, width = input_shape
    if style.startswith("crop:"):
        from ptflow.data.geometry import DEFAULT_INTERPOLATION, Geometry, crop_pixels

        share, _, interpolation = style[5:].partition(":")  # "0.875:bicubic"; "0.875" alone: bilinear
        geometry = Geometry(channels, (height, width), float(share), interpolation or DEFAULT_INTERPOLATION)
        return crop_pixels(flatten(image), geometry)
    if style in ("digit", "object") and channels == 1:
        gray = np.asarray(flatten(image).convert("L"), dtype=np.float32)
        box = round(min(height, width) * 20 / 28) if style == "digit" else min(height, width)
        return _centre(_ink(gray), height, width, box)[None]
    return to_pixels(image, channels, (height, width))


def _ink(gray: np.ndarray) -> np.ndarray:
    """Bright strokes on a zero background, whatever the photo's background and exposure."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 127:  # dark ink on light paper: invert, as MNIST is light ink on black
        gray, background = 255 - gray, 255 - background
    span = gray.max() - background
    if span <= 0:
        return np.zeros_like(gray)
    ink = np.clip((gray - background) / span, 0, 1)
    ink[ink < 0.2] = 0  # paper texture and sensor noise are not ink
    return ink * 255


def _centre(ink: np.ndarray, height: int, width: int, box: int) -> np.ndarray:
    """Crop to the ink, scale its longer side to `box`, place its centre of mass at the centre."""
    from PIL import Image

    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    canvas = np.zeros((height, width), np.float32)
    if len(rows) == 0:
        return canvas.astype(np.uint8)
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = box / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    glyph = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.LANCZOS), np.float32)
    total = glyph.sum()
    if total == 0:
        return canvas.astype(np.uint8)
    ys, xs = np.indices(glyph.shape)
    top = int(round(height / 2 - (ys * glyph).sum() / total))
    left = int(round(width / 2 - (xs * glyph).sum() / total))
    top = min(max(top, 0), height - glyph.shape[0])  # keep the whole glyph on the canvas
    left = min(max(left, 0), width - glyph.shape[1])
    canvas[top:top + glyph.shape[0], left:left + glyph.shape[1]] = glyph
    return np.clip(canvas, 0, 255).astype(np.uint8)


def load_image_input(source: bytes | str | Path, input_shape: tuple[int, ...], style: str,
                     name: str = "image") -> np.ndarray:
    """An image file (opened as image_files.py allows) -> uint8 array of shape input_shape."""
    image = read_image(source, name)
    try:
        return to_input(image, input_shape, style)
    except PtflowError as exc:
        raise PtflowError(f"{name}: {exc}") from None
