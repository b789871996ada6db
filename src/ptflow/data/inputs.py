"""Inputs for a trained model from outside the dataset: files, folders and arrays of the user's.

One place for the shape rules (`check_inputs`) and for reading files (`collect_inputs`), shared
by `ptflow predict`, the Python API and the server, so each gets the same inputs from the same
files. Images go through imaging.py, as at training time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptflow.data.image_files import image_files
from ptflow.data.imaging import load_image_input
from ptflow.data.registry import input_format
from ptflow.errors import PtflowError


def check_inputs(x: np.ndarray, input_shape: tuple[int, ...], source: str = "input") -> np.ndarray:
    """Reshape to (N, *input_shape): accepts flat vectors, and (N, H, W) for one-channel images."""
    size = int(np.prod(input_shape))
    if x.dtype.kind not in "buif":
        raise PtflowError(f"{source}: holds {x.dtype} values; expected numbers")
    if x.ndim >= 1 and x.shape[1:] == tuple(input_shape):
        pass
    elif x.ndim == 2 and x.shape[1] == size:
        x = x.reshape(len(x), *input_shape)
    elif len(input_shape) == 3 and input_shape[0] == 1 and x.shape[1:] == tuple(input_shape[1:]):
        x = x[:, None]
    else:
        raise PtflowError(f"{source}: shape {tuple(x.shape[1:])} per example does not fit the model's "
                          f"input {tuple(input_shape)} (or {size} flat values)")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise PtflowError(f"{source}: contains NaN or infinite values")
    return x


def collect_inputs(paths: list[str], input_shape: tuple[int, ...], image_style: str = "resize",
                   scale: float = 1 / 255) -> tuple[list[str], np.ndarray]:
    """(names, inputs of shape (N, *input_shape)) from files and folders, in the order given.

    Images become uint8 pixels through imaging.py (as the model's dataset was made: image_style);
    .npz and .csv rows keep their values. `scale` is the model's pixel scale, for mixing the two.
    """
    names, arrays = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = image_files(sorted(p for p in path.rglob("*") if p.is_file()), path)
            if not files:
                raise PtflowError(f"{path}: no images in this folder")
        elif path.is_file():
            files = [path]
        elif path.exists():
            raise PtflowError(f"{path}: not a regular file (a device or a pipe?)")
        else:
            raise PtflowError(f"{path}: no such file or folder")
        for file in files:
            file_names, x = read_file(file, input_shape, image_style)
            names += file_names
            arrays.append(x)
    if len({a.dtype for a in arrays}) > 1:
        # uint8 means raw pixels and floats mean model-scale values (see Preprocess), so a mix is
        # brought to the model's scale before stacking, or the pixels would be read as huge floats.
        arrays = [a.astype(np.float32) * scale if a.dtype == np.uint8 else a for a in arrays]
    x = np.concatenate(arrays) if arrays else np.zeros((0, *input_shape), np.float32)
    return names, x


def read_file(file: Path, shape: tuple[int, ...], image_style: str = "resize") -> tuple[list[str], np.ndarray]:
    """(names, inputs) of one file: the examples of a dataset format's file (an .npz array `x`,
    the rows of a .csv: registry.input_format), else one image."""
    form = input_format(file)
    if form is not None:
        x = check_inputs(np.asarray(form.read_inputs(file)), shape, str(file))
        return [f"{file.name}[{i}]" for i in range(len(x))], x
    x = load_image_input(file, shape, image_style, str(file))
    return [str(file)], x[None]
