"""Where examples come from: every dataset name ptflow understands, read into plain numpy arrays.

`load_raw(name)` returns a `RawData`: images as uint8 (N, C, H, W), tabular features as float32
(N, F), labels as int64 class indices, and the class names. Shapes and class counts always come
from the data, never from code; labels.py turns every source's labels into classes the same way.
"""

from __future__ import annotations

import gzip
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptflow import plugins
from ptflow.console import info, printable
from ptflow.data import idx, labels, registry
from ptflow.data.readers import parse_numbers, read_csv, read_npz
from ptflow.errors import PtflowError, UsageError
from ptflow.sizes import MAX_DATASET_BYTES, check_declared


@dataclass
class RawData:
    x: np.ndarray  # (N, C, H, W) uint8 images or (N, F) float32 features
    y: np.ndarray  # (N,) int64 class indices
    classes: list[str]
    x_test: np.ndarray | None = None  # the dataset's own test split, where it has one
    y_test: np.ndarray | None = None
    image_style: str = "resize"  # how `predict` turns a photo into an input (see imaging.py)


def load_raw(name: str, data_dir: str | None = None, target: str | None = None, trust_code: bool = True,
             origin: str | None = None) -> RawData:
    """The dataset `name` (see registry.py), as arrays. origin names the file `name` was read from,
    for the trust rule on import paths (plugins.py)."""
    kind, _, path = name.partition(":")
    if name in registry.SPECS:
        spec = registry.SPECS[name]
        x, y, x_test, y_test = idx.load(spec, data_dir)
        return RawData(x, y, list(spec.classes), x_test, y_test, spec.image_style)
    if name == "digits":
        return load_digits()
    if registry.is_format(name):
        _check_kind(name, Path(path), folder=kind == "folder")
        loaders = {"csv": lambda p: _load_csv(p, target), "npz": _load_npz, "folder": _load_folder}
        return loaders[kind](Path(path))
    source = registry.source(name)  # a plugin or an import path; unknown names fail here
    function = plugins.load(source, trust_code, origin, "dataset")
    return from_plugin(name, function, data_dir)


def _check_kind(name: str, path: Path, folder: bool) -> None:
    """A folder where a folder is expected and a file where a file is: a clear error otherwise."""
    if not path.exists():
        raise PtflowError(f"{name}: {path} does not exist")
    if folder and not path.is_dir():
        raise PtflowError(f"{name}: {path} is a file; folder: needs a folder of class sub-folders")
    if not folder and path.is_dir():
        raise PtflowError(f"{name}: {path} is a folder, not a file")
    if not folder and not path.is_file():  # a device or a FIFO, which might never end
        raise PtflowError(f"{name}: {path} is not a regular file")


def from_plugin(name: str, function, data_dir: str | None) -> RawData:
    """Call a dataset function and check what it returns as an npz file's arrays are checked."""
    args = (data_dir,) if _takes_data_dir(name, function) else ()
    with plugins.running("dataset", name, "loading it"):
        value = function(*args)
        if hasattr(value, "__getitem__") and hasattr(value, "__len__") and not isinstance(value, dict):
            value = _stack_dataset(name, value)
        if isinstance(value, dict):
            value = {k: np.asarray(v) for k, v in value.items() if v is not None}
    if not isinstance(value, dict):
        raise PtflowError(f"dataset {name!r} returned {type(value).__name__}; expected a dict of arrays "
                          f"(x, y, optionally x_test, y_test, classes) or a torch Dataset of (x, y) pairs")
    return _from_arrays(name, value)


def _takes_data_dir(name: str, function) -> bool:
    """Whether to pass --data_dir: a dataset function takes no argument or one, positional.

    Checked before it is called, so a signature ptflow cannot call (keyword-only or further
    required parameters) is one line naming them, not a TypeError from inside the call.
    """
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin or C function without a signature: try with the folder
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional[1:] if p.default is p.empty]
    required += [p.name for p in parameters if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if required:
        raise UsageError(f"dataset {name!r}: its function requires parameter(s) {', '.join(required)}; a dataset "
                         f"function takes no arguments, or one: the data folder (--data_dir)")
    return bool(positional) or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def _stack_dataset(name: str, dataset) -> dict:
    """A map-style torch Dataset of (x, y) pairs, read once into two arrays."""
    xs, ys = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise PtflowError(f"dataset {name!r}: item {i} is not an (x, y) pair")
        x, y = item
        xs.append(np.asarray(x.numpy() if hasattr(x, "numpy") else x))
        ys.append(y.item() if hasattr(y, "item") else y)  # a label as it is: labels.py decides what it means
    if not xs:
        raise PtflowError(f"dataset {name!r} is empty")
    try:
        return {"x": np.stack(xs), "y": np.asarray(ys)}
    except ValueError:
        raise PtflowError(f"dataset {name!r}: its examples do not all have the same shape") from None


def load_digits() -> RawData:
    """scikit-learn's 8x8 handwritten digits, read straight from its package data (no sklearn import)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise PtflowError("the digits dataset needs scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.float32)
    # Pixels are counts 0..16; stretch them to 0..255 so they scale like every other image.
    x = np.rint(table[:, :64] * (255 / 16)).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = table[:, 64].astype(np.int64)
    return RawData(x, y, [str(i) for i in range(10)], image_style="digit")


def _load_npz(path: Path) -> RawData:
    return _from_arrays(str(path), read_npz(path))


def _from_arrays(path: str, arrays: dict[str, np.ndarray]) -> RawData:
    """The npz layout (x, y, optionally x_test, y_test, classes), checked: from a file or a plugin."""
    missing = {"x", "y"} - set(arrays)
    if missing:
        raise PtflowError(f"{path}: missing array(s) {', '.join(sorted(missing))} (need x and y)")
    _check_layout(path, arrays)
    x, y = _check_xy(path, arrays["x"], arrays["y"])
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise PtflowError(f"{path}: x_test and y_test must come together")
    x_test = y_test = None
    if "x_test" in arrays:
        x_test, y_test = _check_xy(path, arrays["x_test"], arrays["y_test"])
        if x_test.shape[1:] != x.shape[1:]:
            raise PtflowError(f"{path}: x_test shape {x_test.shape[1:]} differs from x {x.shape[1:]}")
    ys, classes = labels.encode(path, [y] if y_test is None else [y, y_test], arrays.get("classes"))
    return RawData(x, ys[0], classes, x_test, ys[1] if y_test is not None else None)


# What each array of the layout may be: its shapes, and for the inputs their dtype kinds (b bool,
# i/u integers, f floats); labels.py judges the labels' and names' types and values. Object arrays
# never come from a file (read_npz refuses them unread); a plugin's are refused by the same rules.
LAYOUT = {"x": ("(N, F), (N, H, W) or (N, C, H, W)", (2, 3, 4), "buif"),
          "y": ("(N,)", (1,), None),
          "classes": ("(K,)", (1,), None)}
LAYOUT.update(x_test=LAYOUT["x"], y_test=LAYOUT["y"])


def _check_layout(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Each array of the layout has a shape it may have, no empty dimension, and inputs are numbers."""
    for key, (shapes, ranks, kinds) in LAYOUT.items():
        if key not in arrays:
            continue
        array = arrays[key]
        if kinds and array.dtype.kind not in kinds:
            dtype = "structured" if array.dtype.names else array.dtype
            raise PtflowError(f"{path}: array {key} holds {dtype} values; expected numbers")
        if array.ndim not in ranks:
            raise PtflowError(f"{path}: array {key} must be {shapes}, got shape {array.shape}")
        if 0 in array.shape[1:]:
            raise PtflowError(f"{path}: array {key} has shape {array.shape}: its examples are empty")


def _check_xy(path: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bring x to (N, F) float32 or (N, C, H, W) uint8, or say what's wrong (labels.py judges y's values)."""
    if y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise PtflowError(f"{path}: need N examples with N labels, got x {x.shape} and y {y.shape}")
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) grayscale -> (N, 1, H, W)
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels-last -> channels-first
    if x.ndim not in (2, 4):
        raise PtflowError(f"{path}: x must be (N, F), (N, H, W) or (N, C, H, W), got {x.shape}")
    if x.ndim == 4 and x.dtype != np.uint8:
        raise PtflowError(f"{path}: images must be uint8 (0..255), got {x.dtype}")
    if x.ndim == 2:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise PtflowError(f"{path}: x contains NaN or infinite values")
    return np.ascontiguousarray(x), y


def _load_csv(path: Path, target: str | None) -> RawData:
    """Numeric features, one label column (string labels become class names)."""
    header, body = read_csv(path)
    width = len(header or body[0][1])
    column = _target_column(path, target, header, width)
    features, label_cells = [], []
    for line, row in body:
        label = row[column].strip()
        if not label:
            raise PtflowError(f"{path}: line {line} has no label in column {column}")
        label_cells.append(label)
        features.append(parse_numbers(path, line, row[:column] + row[column + 1:]))
    if not features or width < 2:
        raise PtflowError(f"{path}: need at least one feature column and one data row")
    x = np.asarray(features, dtype=np.float32)
    if not np.isfinite(x).all():  # finite as float64, too large for float32
        raise PtflowError(f"{path}: features too large for float32 (beyond 3.4e38)")
    (y,), classes = labels.encode(str(path), [np.array(label_cells)])
    return RawData(x, y, classes)


def _target_column(path: Path, target: str | None, header: list[str] | None, width: int) -> int:
    if target is None:
        return width - 1
    if header and target in header:
        return header.index(target)
    if target.lstrip("-").isdigit() and -width <= int(target) < width:
        return int(target) % width
    raise UsageError(f"{path}: --target {target!r} is neither a column name nor an index below {width}")


def _load_folder(path: Path) -> RawData:
    """One sub-folder of images per class; a train/ and test/ pair of such folders keeps its split."""
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
