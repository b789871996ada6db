"""Every dataset name ptflow understands: built-in datasets, file formats, plugins, import paths.

    --dataset mnist                  built in: the IDX family below, and scikit-learn's 8x8 digits
    --dataset csv:PATH               a file format (csv:, npz:, folder:): a module of formats/ each
    --dataset my_letters             registered by an installed package under `ptflow.datasets`
    --dataset my_pkg.data:load       a function imported from a module

A dataset from outside is a function called as `function(data_dir)` (the --data_dir flag, or
None; a function without parameters is called without it) that returns either a mapping with
arrays `x` and `y` and optionally `x_test`, `y_test` and `classes` (the npz layout, checked the
same way), or a map-style torch `Dataset` of (x, y) pairs that fits in memory (stacked once).
The format prefixes are reserved: `csv:...` is always a CSV file, never a module named csv.
Pure standard library, so `ptflow --help` lists the names without importing numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib stays off `ptflow --help`'s imports
    from pathlib import Path

from ptflow.data.formats import Format, csv, folder, npz, shards
from ptflow.plugins import Source, find

GROUP = "ptflow.datasets"
# The file formats, by prefix: training, `ptflow predict`, the --dataset help and run names read them here.
FORMATS = {form.prefix: form for form in (csv.FORMAT, npz.FORMAT, folder.FORMAT, shards.FORMAT)}


@dataclass(frozen=True)
class IdxSpec:
    name: str
    torchvision_name: str  # torchvision's folder name, e.g. DIR/MNIST/raw/
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # official archive (.gz) checksums, checked on downloads only
    classes: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    image_style: str = "digit"  # how `predict` turns a photo into an input: see imaging.py


SPECS = {
    "mnist": IdxSpec(
        "mnist", "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"},
        tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": IdxSpec(
        "fashion-mnist", "FashionMNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"},
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        image_style="object",
    ),
    "kmnist": IdxSpec(
        "kmnist", "KMNIST",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {"train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
         "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
         "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
         "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134"},
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}

# The built-in datasets: name -> its loader, called as loader(name, data_dir) -> sources.RawData.
BUILTIN = {**{name: "ptflow.data.sources:load_idx" for name in SPECS}, "digits": "ptflow.data.sources:load_digits"}


def format_of(name: str) -> Format | None:
    """The format of `PREFIX:PATH`; None for any other dataset name."""
    prefix, _, path = name.partition(":")
    return FORMATS.get(prefix) if path else None


def is_format(name: str) -> bool:
    return format_of(name) is not None


def input_format(path: Path) -> Format | None:
    """The format `ptflow predict` reads this file with, by its suffix; None for an image."""
    suffix = path.suffix.lower()
    return next((form for form in FORMATS.values() if suffix in form.suffixes and form.read_inputs), None)


def formats_help() -> str:
    """The formats as --dataset's help lists them: csv:PATH (what it holds), ..."""
    return ", ".join(f"{prefix}:PATH ({form.help})" for prefix, form in FORMATS.items())


def source(name: str) -> Source:
    """Where dataset `name` comes from, without importing it (a UsageError if it is nowhere)."""
    if is_format(name):
        return Source(name=name, kind="format", target=name.partition(":")[0])
    return find(name, BUILTIN, GROUP, "dataset", also=tuple(f"{prefix}:PATH" for prefix in FORMATS))
