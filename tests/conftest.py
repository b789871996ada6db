"""Shared fixtures: tiny datasets on disk and a helper that runs the CLI in-process."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ptflow.cli import main

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def cli(capsys):
    """Run `ptflow ARGS...`; returns (exit status, stdout, stderr)."""

    def _run(*args):
        code = run_cli(*args)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def make_images(n: int, seed: int = 0, size: int = 8, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy images: class k lights up a different horizontal band, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    band = size // n_classes
    for i, label in enumerate(y):
        x[i, label * band:(label + 1) * band] = 200
    return x, y.astype(np.int64)


@pytest.fixture(scope="session")
def npz_data(tmp_path_factory) -> Path:
    x, y = make_images(300)
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    np.savez(path, x=x, y=y, classes=np.array(["top", "middle", "bottom"]))
    return path


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    """A fake 'mnist' in the four-file IDX layout, 10x10 images of 3 classes."""
    root = tmp_path_factory.mktemp("idx")
    x, y = make_images(200, seed=1, size=10)
    xt, yt = make_images(60, seed=2, size=10)
    write_idx(root / "train-images-idx3-ubyte", x)
    write_idx(root / "train-labels-idx1-ubyte", y)
    write_idx(root / "t10k-images-idx3-ubyte", xt, compress=False)
    write_idx(root / "t10k-labels-idx1-ubyte", yt, compress=False)
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory, npz_data) -> dict:
    """One small model trained through the CLI, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("trained")
    code = run_cli("train", "--dataset", f"npz:{npz_data}", "--n_epochs", "3", "--batch_size", "32",
                   "--runs_dir", root / "runs", "--run_name", "toy", "--model_fn", root / "toy.pth", "--verbose", "0")
    assert code == 0
    return {"run": root / "runs" / "toy", "pth": root / "toy.pth",
            "safetensors": root / "runs" / "toy" / "model.safetensors", "root": root}
