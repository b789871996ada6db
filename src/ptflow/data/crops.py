"""The training crop without auto-augment, fused: random resized crop, flip, uint8 tensor, erasing.

`--augment light` (and any knobs without an automatic policy) runs this instead of the
torchvision.transforms.v2 Compose (transforms.py keeps v2 for RandAugment and TrivialAugment).
What it draws is torchvision's: the crop box by RandomResizedCrop's algorithm (the same scale and
ratio, 10 tries, then the centre crop), the flip by `torch.rand(1) < p`, erasing by v2's own
RandomErasing, all from torch's global generator in that order, so `seed_example` still fixes an
example's augmentation whatever the worker. What it saves:
- the box's pixels resized once by torch's uint8 antialiased bilinear or bicubic (`--interpolation`:
  Pillow's filters, bicubic's with Pillow's a = -0.5; bilinear in AVX2 is about 3x as fast as
  Pillow's own on a 300-600 px photo), and the flip on the small result;
- on an upright JPEG decoded whole (the box under twice the crop: most ImageNet-size photos),
  libjpeg-turbo through torchvision.io.decode_jpeg straight to a tensor, the same pixels as
  Pillow's decode without Pillow's image and copy. Without torchvision's decoders, or where they
  refuse a file, Pillow decodes it (and names what is wrong with it), to the same pixels;
- on an image file (`read`), the box is drawn from the header's size before any pixel is decoded;
  a JPEG (RGB or gray, upright: no EXIF rotation) whose box is at least twice the crop on both
  sides is decoded at 1/2, 1/4 or 1/8 scale in libjpeg (`draft`), the largest that keeps the box
  at least the crop's size. A camera photo cropped to 224 then decodes 4-64x fewer pixels. The
  pixels differ a little from a full decode resized (the DCT's own downscale, then one Pillow
  resize of the fractional box); the box, the flip and the erasing do not.
Other files (PNG, rotated or CMYK JPEGs...) are decoded and flattened first; the box is then drawn
from the decoded, upright size, with the same draws.
"""

from __future__ import annotations

import math

from ptflow.data.geometry import DEFAULT_INTERPOLATION

RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop default aspect-ratio range
ORIENTATION = 0x0112  # the EXIF tag: 1 (or absent) is upright as stored


def crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float] = RATIO):
    """(top, left, h, w) of a random crop of an image of that size: torchvision's
    RandomResizedCrop.get_params step for step (the same draws from torch's global generator)."""
    import torch

    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,)).item()
            left = torch.randint(0, width - w + 1, size=(1,)).item()
            return top, left, h, w
    in_ratio = width / height  # fallback: the centre crop, the ratio clamped into range
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draft_scale(box_size: tuple[int, int], size: tuple[int, int]) -> int:
    """The largest DCT reduction (8, 4, 2 or 1) keeping a box (h, w) at least size (h, w)."""
    for s in (8, 4, 2):
        if box_size[0] >= s * size[0] and box_size[1] >= s * size[1]:
            return s
    return 1


class CropFlip:
    """Image (PIL, or a file through `read`) -> uint8 tensor (channels, *size), randomly cropped
    and resized (bilinear or bicubic: interpolation), flipped with probability hflip, erased with
    probability random_erasing. Picklable."""

    def __init__(self, size: tuple[int, int], scale: tuple[float, float], hflip: float, random_erasing: float,
                 mode: str, erase_value: int, interpolation: str = DEFAULT_INTERPOLATION):
        self.size, self.scale, self.hflip, self.mode = (int(size[0]), int(size[1])), tuple(scale), hflip, mode
        self.interpolation = interpolation  # geometry.INTERPOLATIONS: torch's and Pillow's names alike
        self.erase = None
        if random_erasing:  # v2's own, on the uint8 tensor (its draws and rectangle exactly)
            from torchvision.transforms import v2

            self.erase = v2.RandomErasing(random_erasing, value=erase_value)

    def __call__(self, image):
        """A decoded image of this transform's mode."""
        if image.mode != self.mode:
            raise ValueError(f"the training transform takes {self.mode} images, got {image.mode}")
        top, left, h, w = crop_box(image.height, image.width, self.scale)
        return self._finish_box(_pixels(image.crop((left, top, left + w, top + h))))

    def read(self, source, name: str):
        """An image file's bytes or path -> the tensor, decoding no more than the crop needs.
        Unreadable files raise image_files' one-line errors, as read_image does."""
        from ptflow.data.image_files import decode, open_image
        from ptflow.data.imaging import flatten

        image = open_image(source, name)
        width = image.width  # before draft() changes it
        if not _upright_jpeg(image):
            return self(self._converted(flatten(decode(image, name))))
        top, left, h, w = crop_box(image.height, image.width, self.scale)  # the header's size is the decoded one
        box = (left, top, left + w, top + h)
        s = draft_scale((h, w), self.size)
        if s == 1:  # the whole image is decoded: libjpeg-turbo straight to a tensor, the box sliced
            x = self._decode_jpeg(image)
            if x is None:  # torchvision refused it: Pillow decodes it, or says why in one line
                x = _pixels(self._converted(decode(open_image(source, name), name)))
            return self._finish_box(x[:, top:top + h, left:left + w])
        if s > 1:
            # draft() returns the original picture's extent in the scaled one: its width gives the
            # exact reduction (the last, partial DCT block makes image.size round up)
            drafted = image.draft(image.mode, (image.width // s, image.height // s))
            factor = width / drafted[1][2] if drafted else 1.0
            box = tuple(v / factor for v in box)
        return self._finish(self._converted(flatten(decode(image, name))), box)

    def _converted(self, image):
        return image if image.mode == self.mode else image.convert(self.mode)  # a gray photo in a colour dataset

    def _decode_jpeg(self, image):
        """An opened upright JPEG -> uint8 tensor (C, H, W) in this transform's mode, or None where
        torchvision cannot give what Pillow would (a colour JPEG for a gray dataset: Pillow's own
        luma; a damaged file; a size other than the header's)."""
        import warnings

        import torch

        if image.mode == "RGB" and self.mode == "L":
            return None
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError:  # a torchvision without its image decoders (deprecated since 0.29): Pillow's
            return None
        try:
            image.fp.seek(0)
            data = bytearray(image.fp.read())  # writable: torch.frombuffer warns on bytes
            image.close()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # once per image otherwise; Pillow if removed
                x = decode_jpeg(torch.frombuffer(data, dtype=torch.uint8),
                                mode=ImageReadMode.RGB if self.mode == "RGB" else ImageReadMode.GRAY)
        except (OSError, RuntimeError, ValueError):
            return None
        return x if x.shape[1:] == (image.height, image.width) else None

    def _finish_box(self, x):
        """The box's pixels (C, h, w) -> resized to size, flipped, erased. The resize is torch's
        antialiased bilinear or bicubic on uint8 (what v2.functional.resize runs on a uint8 tensor;
        Pillow's filters), so it needs no torchvision and gives the same pixels with or without it."""
        import torch

        x = torch.nn.functional.interpolate(x[None], self.size, mode=self.interpolation, align_corners=False,
                                            antialias=True)[0]
        if self.hflip and torch.rand(1).item() < self.hflip:  # v2.RandomHorizontalFlip's draw
            x = x.flip(-1)
        return self.erase(x) if self.erase is not None else x

    def _finish(self, image, box):
        """A drafted JPEG: resize its (fractional) box to size in one pass, then flip and erase."""
        from ptflow.data.geometry import resample

        height, width = self.size
        resized = image.resize((width, height), resample(self.interpolation), box=box, reducing_gap=None)
        return self._finish_box(_pixels(resized))

    def __repr__(self) -> str:
        return (f"CropFlip({self.mode}, size={self.size}, scale={self.scale}, hflip={self.hflip}, "
                f"interpolation={self.interpolation}, erase={self.erase})")


def _pixels(image):
    """A PIL image -> uint8 tensor (C, H, W)."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.array(image, dtype=np.uint8))  # |x| = (H, W) or (H, W, C)
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def _upright_jpeg(image) -> bool:
    """Whether the header's size is the decoded, upright size and draft() may scale it: a JPEG in
    RGB or L (not CMYK, which flatten converts) without an EXIF rotation."""
    if getattr(image, "format", None) != "JPEG" or image.mode not in ("RGB", "L"):
        return False
    try:
        return image.getexif().get(ORIENTATION, 1) == 1
    except Exception:  # a damaged EXIF block: the general path decodes, and flatten keeps it as stored
        return False
