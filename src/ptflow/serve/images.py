"""Uploaded images -> model inputs, with every size known and checked before a pixel is decoded.

Runs in the decode processes (pool.py), never on the event loop. An image costs memory and CPU
in proportion to its pixels, not its bytes: a 200 KB PNG can claim 16 million pixels. So:
- only the formats in FORMATS are opened at all. Each states its size in a header that is also
  the size its decoder produces. Containers that hold other pictures behind a directory (ICO,
  ICNS, TIFF, ...) are refused unread: their directory can lie about the picture inside;
- every image's size is read from its header and checked against --max_image_pixels, and all
  of a request's images together against --max_request_pixels, before any of them is decoded;
- PIL's own bomb check, which also runs where a decoder learns a size late (a GIF frame larger
  than its screen), uses the same limit, and its warning is an error here (`configure`).
Then each image goes through `ptflow predict`'s own preprocessing (data/imaging.py), so the API
and the CLI give the same probabilities for the same file.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np

from ptflow.data.imaging import to_input
from ptflow.errors import PtflowError
from ptflow.serve.payloads import RequestError

# PIL's format ids -> names for messages. JPEG includes MPO, the multi-picture JPEG of many phone
# cameras: PIL opens it through the JPEG plugin and decodes only its first, primary picture.
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "BMP": "BMP", "WEBP": "WebP"}
FORMAT_NAMES = ", ".join(FORMATS.values())
# What PIL's decoders raise on damaged data, besides its own errors: a client's mistake (400), not ours.
DAMAGED = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)


def configure(max_image_pixels: int) -> None:
    """Make PIL's own decompression-bomb check refuse exactly what the server refuses (per process)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_image_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL only warns between 1x and 2x its limit


def decode_images(images: list[tuple[str, bytes]], input_shape: tuple[int, ...], style: str,
                  max_image_pixels: int, max_request_pixels: int) -> np.ndarray:
    """Encoded images -> uint8 (N, *input_shape), or a RequestError; sizes are checked before decoding."""
    if len(input_shape) != 3:
        raise RequestError(422, f"this model takes {tuple(input_shape)} feature vectors, not images")
    opened = [_open(data, name, max_image_pixels) for name, data in images]
    total = sum(image.width * image.height for image in opened)
    if total > max_request_pixels:
        raise RequestError(413, f"the {len(opened)} images of this request have {total:,} pixels together; "
                                f"at most {max_request_pixels:,} are allowed per request")
    return np.stack([_decode(image, name, input_shape, style) for image, (name, _) in zip(opened, images)])


def _open(data: bytes, name: str, max_pixels: int):
    """The image with its header read and its size checked; no pixel decoded yet."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # between 1x and 2x the limit: refused just below, with its size named
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except UnidentifiedImageError:
        raise RequestError(415, f"{name}: not an image in an accepted format ({FORMAT_NAMES})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(413, f"{name}: image too large (more than {max_pixels:,} pixels)") from None
    except DAMAGED as exc:
        raise RequestError(400, f"{name}: not a readable image ({type(exc).__name__})") from None
    if image.width * image.height > max_pixels:
        raise RequestError(413, f"{name}: {image.width}x{image.height} pixels is more than the "
                                f"{max_pixels:,} allowed per image")
    return image


def _decode(image, name: str, input_shape: tuple[int, ...], style: str) -> np.ndarray:
    from PIL import Image

    size = image.size
    try:
        image.load()
        if image.size != size:  # a decoder that learned another size while decoding: refuse, whatever it was
            raise RequestError(400, f"{name}: the image's size changed while decoding ({size} -> {image.size})")
        return to_input(image, input_shape, style)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(413, f"{name}: image too large") from None
    except PtflowError as exc:
        raise RequestError(400, str(exc)) from None
    except DAMAGED as exc:  # truncated or damaged past the header
        raise RequestError(400, f"{name}: not a readable image ({type(exc).__name__})") from None
