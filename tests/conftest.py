"""Shared fixtures: tiny datasets on disk and a helper that runs the CLI in-process."""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ptflow.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"  # beside the checkout, where the article keeps it


def find_mnist() -> Path | None:
    """The folder of real MNIST's four IDX files: where ptflow itself finds them ($PTFLOW_DATA_DIR
    in its layouts, the cache, system folders), else ../shared/data/mnist; None where none has them."""
    from ptflow.data import idx
    from ptflow.data.registry import SPECS
    from ptflow.errors import PtflowError

    for data_dir in (None, SHARED_MNIST):
        try:
            files = idx.locate(SPECS["mnist"], str(data_dir) if data_dir else None, download=False)
        except PtflowError:
            continue
        return next(iter(files.values())).parent
    return None


_FOUND_MNIST = find_mnist()
HAVE_MNIST = _FOUND_MNIST is not None  # the tests that train on real MNIST skip without it
MNIST_DIR = _FOUND_MNIST or SHARED_MNIST


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    code = run_cli("train", "--dataset", f"npz:{npz_data}", "--n_epochs", "10", "--batch_size", "32",
                   "--runs_dir", root / "runs", "--run_name", "toy", "--model_fn", root / "toy.pth", "--verbose", "0")
    assert code == 0
    return {"run": root / "runs" / "toy", "pth": root / "toy.pth",
            "safetensors": root / "runs" / "toy" / "model.safetensors", "root": root}


@pytest.fixture(scope="session")
def tabular(tmp_path_factory) -> Path:
    """A small model of float features (N, 6), standardised: the non-image path of serve and export."""
    root = tmp_path_factory.mktemp("tabular")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 240)
    x = (rng.standard_normal((240, 6)) * 5 + 20 + y[:, None] * 4).astype(np.float32)
    np.savez(root / "features.npz", x=x, y=y)
    code = run_cli("train", "--dataset", f"npz:{root / 'features.npz'}", "--n_epochs", "2", "--batch_size", "32",
                   "--normalize", "standard", "--runs_dir", root / "runs", "--run_name", "tab",
                   "--model_fn", root / "tab.safetensors", "--verbose", "0")
    assert code == 0
    return root / "tab.safetensors"


@contextlib.contextmanager
def _serve_process(model_fn: Path, *flags: str, env: dict | None = None):
    """`ptflow serve` in its own process on a free loopback port; yields its base URL once ready."""
    import httpx

    command = [sys.executable, "-m", "ptflow", "serve", "--model_fn", str(model_fn), "--port", "0", *flags]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **(env or {})})
    try:
        seen, match = "", None
        for line in server.stdout:  # the first line that names the URL; warnings may come before it
            seen += line
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match:
                break
        assert match, f"server did not start: {seen}"
        url = match.group(0)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


@pytest.fixture(scope="session")
def serve_process():
    """A context-manager factory: `with serve_process(model_fn, *flags) as url: ...`."""
    return _serve_process
