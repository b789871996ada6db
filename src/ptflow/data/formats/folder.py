"""`folder:PATH`: one sub-folder of images per class (a train/ and test/ pair keeps its split).

`ptflow predict` reads images itself (inputs.py), a file or a folder of them, as training made them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib stays off `ptflow --help`'s imports
    from pathlib import Path

from ptflow.console import info, printable
from ptflow.data.formats import Format
from ptflow.errors import PtflowError
from ptflow.sizes import MAX_DATASET_BYTES, check_declared


def load(path: Path, target: str | None = None):
    """One sub-folder of images per class; a train/ and test/ pair of such folders keeps its split."""
    from ptflow.data import labels
    from ptflow.data.sources import RawData

    if (path / "train").is_dir() and (path / "test").is_dir():
        train, test = _class_folders(path / "train"), _class_folders(path / "test")
        classes = labels.class_names(str(path / "train"), list(train))
        unknown = set(test) - set(classes)
        if unknown:
            raise PtflowError(f"{path / 'test'}: class folder(s) {', '.join(sorted(unknown))} not in the "
                              f"training classes")
        x, y = _read_class_folders(path / "train", train, classes)
        x_test, y_test = _read_class_folders(path / "test", test, classes, size=x.shape[-2:], channels=x.shape[1])
        return RawData(x, y, classes, x_test, y_test)
    folders = _class_folders(path)
    classes = labels.class_names(str(path), list(folders))
    x, y = _read_class_folders(path, folders, classes)
    return RawData(x, y, classes)


def _class_folders(root: Path) -> dict[str, Path]:
    """{class name: folder} for the sub-folders of root holding images, by printable name.

    A hidden folder (.ipynb_checkpoints, .git) or one without images is no class: a model with a
    class it has never seen an example of can only be wrong about it. Said once, as they are skipped.
    """
    folders, skipped = {}, []
    for folder in _entries(root):
        if not folder.is_dir():
            continue
        name = printable(folder.name)
        if folder.name.startswith(".") or not _images_in(folder):
            skipped.append(name)
        else:
            folders[name] = folder
    if skipped:
        info(f"{root}: not classes (hidden or without images): {', '.join(skipped[:10])}"
             f"{', ...' if len(skipped) > 10 else ''}")
    return folders


def _images_in(folder: Path) -> list[Path]:
    """A folder's image files, by name (image_files.py: another image format is refused, not skipped);
    hidden files (macOS's ._photo.jpg) are metadata, not images."""
    from ptflow.data.image_files import image_files

    return image_files([f for f in _entries(folder) if not f.name.startswith(".") and f.is_file()], folder)


def _read_class_folders(root: Path, folders: dict[str, Path], classes: list[str], size=None, channels=None):
    """Every image of the class folders, labelled by its class's index in classes, as the first
    image's channels and size (resized to it).

    Images become pixels exactly as `ptflow predict` makes them (imaging.to_pixels), and the
    whole dataset's decoded size is checked from the first image before the rest are decoded.
    """
    import numpy as np

    from ptflow.data.image_files import read_image
    from ptflow.data.imaging import channels_of, to_pixels

    index = {name: i for i, name in enumerate(classes)}
    files = [(index[name], file) for name, folder in folders.items() for file in _images_in(folder)]
    images, y = [], []
    for label, file in files:
        image = read_image(file, str(file))
        if channels is None:
            channels = channels_of(image)
        if size is None:
            size = (image.height, image.width)  # every image is resized to the first one's size
            check_declared(f"{root}: {len(files)} images of {channels}x{size[0]}x{size[1]} pixels",
                           len(files) * channels * size[0] * size[1], limit=MAX_DATASET_BYTES)
        try:
            images.append(to_pixels(image, channels, size))
        except PtflowError as exc:
            raise PtflowError(f"{file}: {exc}") from None
        y.append(label)
    if not images:
        raise PtflowError(f"{root}: no images found in the class folders")
    return np.stack(images), np.array(y, dtype=np.int64)


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise PtflowError(f"{folder}: cannot list this folder ({exc.strerror or exc})") from None


FORMAT = Format("folder", "a folder of class sub-folders of images", load, folder=True)
