"""Opening image files that nobody vouches for: one allow-list of formats and one pixel limit.

Every reader of image files goes through `open_image`: `folder:` datasets, `ptflow predict`,
the Python API and the server (serve/images.py, with its own tighter limit). So:
- only the formats in FORMATS are opened. The list goes to PIL itself (`formats=`), so PIL never
  tries its other plugins, whatever the file's name says: a PostScript file named `x.png` is not
  an image here, and PIL's EPS plugin (which runs Ghostscript) is never reached. Each format
  states its size in a header that is also the size its decoder produces; containers whose
  directory can lie about the picture inside (ICO, ICNS, TIFF, ...) are refused unread;
- the size is read from the header and checked before a pixel is decoded, and PIL's own
  decompression-bomb check, which also runs where a decoder learns a size late (a GIF frame
  larger than its screen), uses the same limit; its warning is an error here;
- a picture whose size changes while it is decoded is refused, whatever the change.
Errors are one line naming the file; their classes tell the server which HTTP status to answer.
"""

from __future__ import annotations

import io
import struct
import warnings
from functools import lru_cache
from pathlib import Path

from ptflow.errors import PtflowError

# PIL's format ids -> names for messages. JPEG includes MPO, the multi-picture JPEG of many phone
# cameras: PIL opens it through the JPEG plugin and decodes only its first, primary picture.
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "BMP": "BMP", "WEBP": "WebP"}
FORMAT_NAMES = ", ".join(FORMATS.values())
MAX_PIXELS = 40_000_000  # larger images are refused: a decompression bomb costs memory before it costs time
# What PIL's decoders raise on damaged data, besides its own errors: the file's fault, not ours.
DAMAGED = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)


class ImageRefused(PtflowError):
    """Not an image in one of FORMATS, whatever its name says (HTTP 415)."""

    problem = "not an image"  # what a dataset's list of skipped files calls it (bad_images.py)


class OtherFormat(ImageRefused):
    """A file named as an image format PIL knows and ptflow does not read (.tif, .ico...)."""

    problem = "format not accepted"


class ImageTooLarge(PtflowError):
    """More pixels than allowed, known from the header before any pixel is decoded (HTTP 413)."""

    problem = "too many pixels"


class ImageDamaged(PtflowError):
    """An accepted format, but damaged, truncated or empty (HTTP 400)."""

    problem = "damaged"


def open_image(source: bytes | str | Path, name: str = "image", max_pixels: int = MAX_PIXELS):
    """The image with its header read and its size checked; no pixel decoded yet (see `decode`)."""
    from PIL import Image, UnidentifiedImageError

    _limit(max_pixels)
    if _is_empty(source):  # PIL would call it "not an image"; it is a file whose copy failed
        raise ImageDamaged(f"{name}: an empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # between 1x and 2x the limit: refused just below, with its size named
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=list(FORMATS))
    except UnidentifiedImageError:
        raise ImageRefused(f"{name}: not an image in an accepted format ({FORMAT_NAMES})") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name}: image too large (more than {max_pixels:,} pixels)") from None
    except DAMAGED as exc:
        raise ImageDamaged(f"{name}: not a readable image, damaged or truncated ({type(exc).__name__})") from None
    if image.width * image.height > max_pixels:
        raise ImageTooLarge(f"{name}: {image.width}x{image.height} pixels is more than the "
                            f"{max_pixels:,} allowed per image")
    return image


def decode(image, name: str = "image"):
    """An opened image (open_image), decoded; refused if its size changes on the way."""
    from PIL import Image

    size = image.size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL only warns between 1x and 2x
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"{name}: image too large (more than {Image.MAX_IMAGE_PIXELS:,} pixels)") from None
    except DAMAGED as exc:  # truncated or damaged past the header
        raise ImageDamaged(f"{name}: not a readable image, damaged or truncated ({type(exc).__name__})") from None
    if image.size != size:  # a decoder that learned another size while decoding: refuse, whatever it was
        raise ImageDamaged(f"{name}: the image's size changed while decoding ({size} -> {image.size})")
    return image


def read_image(source: bytes | str | Path, name: str = "image", max_pixels: int = MAX_PIXELS):
    """open_image, then decode: a decoded PIL image or a one-line error."""
    return decode(open_image(source, name, max_pixels), name)


def image_files(files, where: str | Path) -> list[Path]:
    """The files among `files` to read as images: those named as an accepted format. A file named
    as another image format is refused rather than skipped, so no class or input goes missing
    silently; other files (notes, .DS_Store) are skipped."""
    found = named_as_images(files)
    for file in found:
        if not is_accepted_name(file):
            raise other_format(file, where)
    return found


def named_as_images(files) -> list[Path]:
    """The files among `files` named as an image of any format PIL knows, accepted or not."""
    accepted, other = _suffixes()
    known = accepted | other
    return [Path(file) for file in files if Path(file).suffix.lower() in known]


def is_accepted_name(file: str | Path) -> bool:
    return Path(file).suffix.lower() in _suffixes()[0]


def other_format(file: str | Path, where: str | Path) -> OtherFormat:
    """The refusal of a file named as an image format that is not read."""
    suffix = Path(file).suffix.lower()
    return OtherFormat(f"{file}: {suffix} images are not read (accepted formats: {FORMAT_NAMES}); "
                       f"convert it or move it out of {where}")


def _is_empty(source: bytes | str | Path) -> bool:
    if isinstance(source, bytes):
        return not source
    try:
        return Path(source).stat().st_size == 0
    except OSError:  # PIL's own open says what is wrong with the path
        return False


@lru_cache(maxsize=1)
def _suffixes() -> tuple[frozenset[str], frozenset[str]]:
    """(names of accepted formats, names of PIL's other formats), from PIL's own table of suffixes."""
    from PIL import Image

    Image.init()
    table = Image.registered_extensions()
    accepted = frozenset(s for s, format in table.items() if format in FORMATS or format == "MPO")
    return accepted, frozenset(table) - accepted


def _limit(max_pixels: int) -> None:
    """PIL's own bomb check at our limit. It is a process-wide setting: every caller in a process
    passes the same limit (the CLI and the API MAX_PIXELS, a server's decode process its own)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels
