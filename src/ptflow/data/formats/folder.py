"""`folder:PATH`: one sub-folder of images per class (a train/ and test/ pair keeps its split).

The folder is listed, not decoded: its images become an ImageList (records.py), decoded into
memory or streamed from disk as splits.py decides. An image file that cannot be read stops the run
or is skipped, as --bad_images says (bad_images.py).
`ptflow predict` reads images itself (inputs.py), a file or a folder of them, as training made them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib stays off `ptflow --help`'s imports
    from pathlib import Path

from ptflow.console import info, printable
from ptflow.data.formats import Format
from ptflow.errors import PtflowError


def load(path: Path, target: str | None = None, bad_images=None):
    """One sub-folder of images per class; a train/ and test/ pair of such folders keeps its split.

    bad_images (a bad_images.BadImages; default: stop at the first) decides what an image file that
    cannot be read does. Every file is listed before any is decoded: its ceiling is a share of them all.
    """
    from ptflow.data import labels
    from ptflow.data.bad_images import BadImages
    from ptflow.data.sources import RawData

    bad = bad_images if bad_images is not None else BadImages("fail", 0.0)
    if (path / "train").is_dir() and (path / "test").is_dir():
        train, test = _class_folders(path / "train"), _class_folders(path / "test")
        classes = labels.class_names(str(path / "train"), list(train))
        unknown = set(test) - set(classes)
        if unknown:
            raise PtflowError(f"{path / 'test'}: class folder(s) {', '.join(sorted(unknown))} not in the "
                              f"training classes")
        _refuse_other_formats(bad, train, test)
        x = _read_class_folders(path / "train", train, classes, bad)
        x_test = _read_class_folders(path / "test", test, classes, bad)
        return RawData(x, x.y, classes, x_test=x_test, y_test=x_test.y, skipped=bad.skipped)
    folders = _class_folders(path)
    classes = labels.class_names(str(path), list(folders))
    _refuse_other_formats(bad, folders)
    x = _read_class_folders(path, folders, classes, bad)
    return RawData(x, x.y, classes, skipped=bad.skipped)


def _class_folders(root: Path) -> dict[str, tuple[Path, list[Path]]]:
    """{class name: (folder, its image files)} for the sub-folders of root holding images, by printable name.

    A hidden folder (.ipynb_checkpoints, .git) or one without images is no class: a model with a
    class it has never seen an example of can only be wrong about it. Said once, as they are skipped.
    """
    folders, skipped = {}, []
    for folder in _entries(root):
        if not folder.is_dir():
            continue
        name = printable(folder.name)
        files = [] if folder.name.startswith(".") else _images_in(folder)
        if not files:
            skipped.append(name)
        else:
            folders[name] = (folder, files)
    if skipped:
        info(f"{root}: not classes (hidden or without images): {', '.join(skipped[:10])}"
             f"{', ...' if len(skipped) > 10 else ''}")
    return folders


def _images_in(folder: Path) -> list[Path]:
    """A folder's files named as images of any format, by name (another format than the accepted
    ones is refused, not skipped: _refuse_other_formats); hidden files (macOS's ._photo.jpg) are
    metadata, not images."""
    from ptflow.data.image_files import named_as_images

    return named_as_images([f for f in _entries(folder) if not f.name.startswith(".") and f.is_file()])


def _refuse_other_formats(bad, *parts: dict[str, tuple[Path, list[Path]]]) -> None:
    """Count every image file for the ceiling, then refuse those named as a format that is not read
    (.tif, .ico...) before a pixel is decoded: with --bad_images fail, the first stops the run."""
    from ptflow.data.image_files import is_accepted_name, other_format

    folders = [value for part in parts for value in part.values()]
    bad.total = sum(len(files) for _, files in folders)
    for folder, files in folders:
        for file in files:
            if not is_accepted_name(file):
                bad.refuse(file, other_format(file, folder))


def _read_class_folders(root: Path, folders: dict[str, tuple[Path, list[Path]]], classes: list[str], bad):
    """Every image of the class folders whose header can be read, labelled by its class's index
    in classes, listed with its size and channels (records.py): no pixel is decoded here.

    A file that cannot be opened (empty, not an image, too many pixels) stops here or is skipped,
    as `bad` says; one damaged past its header is met when it is decoded.
    """
    import numpy as np

    from ptflow.data.image_files import is_accepted_name, open_image
    from ptflow.data.imaging import channels_of
    from ptflow.data.records import ImageList

    index = {name: i for i, name in enumerate(classes)}
    files = [(index[name], file) for name, (_, found) in folders.items() for file in found if is_accepted_name(file)]
    kept, y, sizes, gray = [], [], [], []
    for label, file in files:
        try:
            image = open_image(file, str(file))
        except PtflowError as exc:  # ImageRefused, ImageTooLarge, ImageDamaged: all name the file
            bad.refuse(file, exc)
            continue
        with image:
            kept.append(str(file))
            y.append(label)
            sizes.append((image.height, image.width))
            gray.append(channels_of(image) == 1)
    if not kept:
        raise PtflowError(f"{root}: no images found in the class folders")
    _check_every_class_kept(folders, index, y)
    return ImageList(kept, np.array(y, dtype=np.int64), np.array(sizes, dtype=np.int64).reshape(-1, 2),
                     np.array(gray, dtype=bool))


def _check_every_class_kept(folders: dict, index: dict[str, int], y: list[int]) -> None:
    """A class folder whose every image was skipped would leave a class no example teaches."""
    kept = set(y)
    for name, (folder, _) in folders.items():
        if index[name] not in kept:
            raise PtflowError(f"{folder}: none of its images can be read (--bad_images skip left none of them)")


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise PtflowError(f"{folder}: cannot list this folder ({exc.strerror or exc})") from None


FORMAT = Format("folder", "a folder of class sub-folders of images", load, folder=True, reads_images=True)
