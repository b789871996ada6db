"""Test predictions kept on disk: each test example's predicted class and its probability.

`ptflow train` (for its run folder) and `ptflow evaluate` (for its output folder) write
`predictions.npz`, so that `ptflow runs compare` can test whether two models' accuracies differ
on the very same test examples (McNemar's test needs to know which examples each got right).
The file holds the true labels too, and a fingerprint of the test split itself (its inputs and
labels, in order): two files are comparable only when their fingerprints are equal, whatever
dataset names, seeds or ratios produced them.

    y_true, y_pred  int32 (n,)      the label and the predicted class of each test example
    p_pred          float32 (n,)    the predicted class's probability
    fingerprint     str             sha256 of the test split's inputs and labels
    data_fingerprint str            sha256 of the whole dataset, as in the model file

About 12 bytes per example: 120 KB for MNIST's 10,000 test images. Read without pickle.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptflow.errors import PtflowError
from ptflow.files import atomic_write_bytes
from ptflow.sizes import check_zip

FILE = "predictions.npz"
ARRAYS = ("y_true", "y_pred", "p_pred", "fingerprint", "data_fingerprint")


@dataclass(kw_only=True)
class Predictions:
    y_true: np.ndarray
    y_pred: np.ndarray
    p_pred: np.ndarray
    fingerprint: str
    data_fingerprint: str

    @property
    def correct(self) -> np.ndarray:
        return self.y_pred == self.y_true


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of a split's inputs and labels in order: equal only for the same examples."""
    digest = hashlib.sha256()
    for array in (x, y):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def save(path: str | Path, y_true: np.ndarray, probs: np.ndarray, test_fingerprint: str,
         data_fingerprint: str | None) -> None:
    """Write predictions.npz (atomically) from the labels and the (n, n_classes) probabilities."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, y_true=np.asarray(y_true, np.int32), y_pred=probs.argmax(1).astype(np.int32),
                        p_pred=probs.max(1).astype(np.float32), fingerprint=np.array(test_fingerprint),
                        data_fingerprint=np.array(data_fingerprint or ""))
    atomic_write_bytes(path, buffer.getvalue())


def load(path: str | Path) -> Predictions:
    """A predictions file, checked: a damaged or foreign file is a clear error. It sits in a run
    folder, which may come from anyone: its sizes are checked before numpy allocates them."""
    try:
        with zipfile.ZipFile(path) as archive:  # a bare .npy or anything else is not a zip: BadZipFile
            check_zip(str(path), archive, Path(path).stat().st_size)
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise PtflowError(f"{path}: not a readable ptflow predictions file ({type(exc).__name__})") from None
    n = arrays["y_true"].size
    if any(arrays[k].shape != (n,) for k in ("y_true", "y_pred", "p_pred")) or \
            any(arrays[k].shape != () for k in ("fingerprint", "data_fingerprint")):
        raise PtflowError(f"{path}: damaged predictions file (arrays of the wrong shapes)")
    return Predictions(y_true=arrays["y_true"], y_pred=arrays["y_pred"], p_pred=arrays["p_pred"],
                       fingerprint=str(arrays["fingerprint"]), data_fingerprint=str(arrays["data_fingerprint"]))
