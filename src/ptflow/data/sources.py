"""Where examples come from: every dataset name ptflow understands, read into plain numpy arrays.

`load_raw(name)` returns a `RawData`: images as uint8 (N, C, H, W), tabular features as float32
(N, F), labels as int64 class indices, and the class names. A file format (`PREFIX:PATH`) is read
by its module in formats/, a built-in dataset by the loader registry.py names, a plugin's by its
function, whose arrays are checked here as an .npz file's are. Shapes and class counts always come
from the data, never from code; labels.py turns every source's labels into classes the same way.
"""

from __future__ import annotations

import gzip
import importlib.util
import inspect
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import numpy as np

from ptflow import plugins
from ptflow.data import idx, labels, registry
from ptflow.errors import PtflowError, UsageError


@dataclass
class RawData:
    x: np.ndarray  # (N, C, H, W) uint8 images or (N, F) float32 features
    y: np.ndarray  # (N,) int64 class indices
    classes: list[str]
    _: KW_ONLY  # the rest by name: RawData(x, y, classes, x_test=..., y_test=...)
    x_test: np.ndarray | None = None  # the dataset's own test split, where it has one
    y_test: np.ndarray | None = None
    image_style: str = "resize"  # how `predict` turns a photo into an input (see imaging.py)
    skipped: list[dict] = field(default_factory=list)  # image files left out by --bad_images skip (bad_images.py)


def load_raw(name: str, data_dir: str | None = None, target: str | None = None, trust_code: bool = True,
             origin: str | None = None, bad_images=None) -> RawData:
    """The dataset `name` (see registry.py), as arrays. origin names the file `name` was read from,
    for the trust rule on import paths (plugins.py). bad_images (a bad_images.BadImages) is what a
    format that reads image files does with one it cannot read; other sources have no such files."""
    form = registry.format_of(name)
    if form is not None:  # PREFIX:PATH, read by its format's module
        path = Path(name.partition(":")[2])
        _check_kind(name, path, form)
        if form.reads_images and bad_images is not None:
            return form.load(path, target, bad_images=bad_images)
        return form.load(path, target)
    source = registry.source(name)  # built in, a plugin or an import path; unknown names fail here
    function = plugins.load(source, trust_code, origin, "dataset")
    if source.kind == "builtin":
        return function(name, data_dir)
    return from_plugin(name, function, data_dir)


def _check_kind(name: str, path: Path, form) -> None:
    """A folder where the format reads a folder and a file where it reads a file: a clear error otherwise."""
    if not path.exists():
        raise PtflowError(f"{name}: {path} does not exist")
    if form.folder and not path.is_dir():
        raise PtflowError(f"{name}: {path} is a file; {form.prefix}: needs {form.help}")
    if not form.folder and path.is_dir():
        raise PtflowError(f"{name}: {path} is a folder, not a file")
    if not form.folder and not path.is_file():  # a device or a FIFO, which might never end
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
    return from_arrays(name, value)


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


def load_idx(name: str, data_dir: str | None) -> RawData:
    """A built-in IDX dataset (registry.SPECS: mnist, fashion-mnist, kmnist), found or downloaded by idx.py."""
    spec = registry.SPECS[name]
    x, y, x_test, y_test = idx.load(spec, data_dir)
    return RawData(x, y, list(spec.classes), x_test=x_test, y_test=y_test, image_style=spec.image_style)


def load_digits(name: str = "digits", data_dir: str | None = None) -> RawData:
    """scikit-learn's 8x8 handwritten digits, read straight from its package data (no sklearn import).
    A built-in loader's signature (name, data_dir); the digits need neither."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise PtflowError("the digits dataset needs scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.float32)
    # Pixels are counts 0..16; stretch them to 0..255 so they scale like every other image.
    x = np.rint(table[:, :64] * (255 / 16)).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = table[:, 64].astype(np.int64)
    return RawData(x, y, [str(i) for i in range(10)], image_style="digit")


def from_arrays(path: str, arrays: dict[str, np.ndarray]) -> RawData:
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
    return RawData(x, ys[0], classes, x_test=x_test, y_test=ys[1] if y_test is not None else None)


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
