"""Dataset file formats, `--dataset PREFIX:PATH`: one module per format, each declaring a `Format`.

data/registry.py names them (`FORMATS`); training (`sources.load_raw`), `ptflow predict`'s
inputs (`inputs.py`), the `--dataset` help and run names all read that registry, so a new format
is one module here and its entry there. A format module imports numpy and the readers inside its
functions: `ptflow --help` reads the declarations without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pathlib stays off `ptflow --help`'s imports
    from pathlib import Path


@dataclass(frozen=True)
class Format:
    prefix: str  # --dataset PREFIX:PATH
    help: str  # what PATH holds, in a few words, for --dataset's help
    load: Callable[[Path, str | None], Any]  # (PATH, --target) -> sources.RawData, for training
    folder: bool = False  # PATH names a folder (else a regular file)
    suffixes: tuple[str, ...] = ()  # files of this format `ptflow predict` reads with read_inputs
    read_inputs: Callable[[Path], Any] | None = None  # file -> its examples, an (N, ...) numpy array
    reads_images: bool = False  # load also takes bad_images= (a bad_images.BadImages): --bad_images applies
