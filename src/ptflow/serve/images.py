"""Uploaded images -> model inputs, with every size known and checked before a pixel is decoded.

Runs in the decode processes (pool.py), never on the event loop. An image costs memory and CPU
in proportion to its pixels, not its bytes: a 200 KB PNG can claim 16 million pixels. Each image
is opened as every image file in ptflow is (data/image_files.py: the accepted formats only, its
size read from the header, PIL's bomb check at the same limit), here with --max_image_pixels;
all of a request's images together are checked against --max_request_pixels before any of them
is decoded. Then each image goes through `ptflow predict`'s own preprocessing (data/imaging.py),
so the API and the CLI give the same probabilities for the same file.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ptflow.data.image_files import ImageRefused, ImageTooLarge, decode, open_image
from ptflow.data.imaging import to_input
from ptflow.errors import PtflowError
from ptflow.serve.payloads import RequestError


def decode_images(images: list[tuple[str, bytes]], input_shape: tuple[int, ...], style: str,
                  max_image_pixels: int, max_request_pixels: int) -> np.ndarray:
    """Encoded images -> uint8 (N, *input_shape), or a RequestError; sizes are checked before decoding."""
    if len(input_shape) != 3:
        raise RequestError(422, f"this model takes {tuple(input_shape)} feature vectors, not images")
    with _as_request_errors():
        opened = [open_image(data, name, max_image_pixels) for name, data in images]
    total = sum(image.width * image.height for image in opened)
    if total > max_request_pixels:
        raise RequestError(413, f"the {len(opened)} images of this request have {total:,} pixels together; "
                                f"at most {max_request_pixels:,} are allowed per request")
    with _as_request_errors():
        return np.stack([_input(decode(image, name), name, input_shape, style)
                         for image, (name, _) in zip(opened, images)])


def _input(image, name: str, input_shape: tuple[int, ...], style: str) -> np.ndarray:
    try:
        return to_input(image, input_shape, style)
    except PtflowError as exc:
        raise PtflowError(f"{name}: {exc}") from None


@contextmanager
def _as_request_errors():
    """An image's one-line error as the HTTP status it means: 415 a format not accepted, 413 too
    many pixels, 400 anything else about the file (damaged, a mode that cannot be converted)."""
    try:
        yield
    except ImageRefused as exc:
        raise RequestError(415, str(exc)) from None
    except ImageTooLarge as exc:
        raise RequestError(413, str(exc)) from None
    except PtflowError as exc:
        raise RequestError(400, str(exc)) from None
