"""Fixtures: tiny datasets and trained models on disk, the CLI in-process, `ptflow serve` processes.

Plain functions that tests share live in helpers/ (test modules import them from there, never
from this file or from one another).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_images, run_cli, write_idx
from helpers.serving import start_command, stop


@pytest.fixture
def cli(capsys):
    """Run `ptflow ARGS...`; returns (exit status, stdout, stderr)."""

    def _run(*args):
        code = run_cli(*args)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture(scope="session")
def npz_data(tmp_path_factory) -> Path:
    x, y = make_images(300)
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    np.savez(path, x=x, y=y, classes=np.array(["top", "middle", "bottom"]))
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
    command = [sys.executable, "-m", "ptflow", "serve", "--model_fn", str(model_fn), "--port", "0", *flags]
    server, url = start_command(command, env={**os.environ, **(env or {})})
    try:
        yield url
    finally:
        stop(server)


@pytest.fixture(scope="session")
def serve_process():
    """A context-manager factory: `with serve_process(model_fn, *flags) as url: ...`."""
    return _serve_process
