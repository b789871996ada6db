"""What test modules share: toy data, the CLI in-process, real MNIST's location, and the checks
that several suites make (a one-line error, two runs that are the same run).

Test modules import shared code from here (and take fixtures from conftest.py), never from one
another: tests/test_architecture.py checks it. `serving.py` starts servers, `children.py` runs
the CLI in forked child processes, and `kill_loop.py` kills and resumes training runs.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
from pathlib import Path

import numpy as np

from ptflow.cli import main

REPO = Path(__file__).resolve().parents[2]
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


def run_cli(*args) -> int:
    """`ptflow ARGS...` in this process; its exit status."""
    return main([str(a) for a in args])


def make_images(n: int, seed: int = 0, size: int = 8, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy images: class k lights up a different horizontal band, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    band = size // n_classes
    for i, label in enumerate(y):
        x[i, label * band:(label + 1) * band] = 200
    return x, y.astype(np.int64)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """An IDX file (MNIST's format) of uint8 values; gzipped, named .gz, unless compress=False."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def assert_one_line(err: str, *words: str) -> None:
    """One line holding every word, never a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, err)


def assert_one_line_error(err: str) -> None:
    """What every refusal prints: one line naming the error, never a traceback."""
    assert_one_line(err, "error")


def assert_refused_before_a_run(cli, runs_dir: Path, *args, words: tuple[str, ...] = ()) -> None:
    """`ptflow train ARGS --runs_dir runs_dir` exits 2 with one error line holding every word, and
    leaves runs_dir empty: refused before a run folder exists."""
    code, _, err = cli("train", *args, "--runs_dir", runs_dir)
    assert code == 2, err
    assert_one_line(err, "error", *words)
    assert not any(Path(runs_dir).iterdir())


def epoch_metrics(run: Path) -> list[dict]:
    """A run folder's metrics.jsonl without the timings (which no two runs share)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return without_seconds(records)


def without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_same_run(a: Path, b: Path) -> None:
    """Same weights, same training state (optimizer, best weights, RNGs), same metrics."""
    import torch
    from safetensors.torch import load_file

    from ptflow.training.checkpoint import read_checkpoint

    for name in ("model.safetensors", "checkpoint.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys()
        different = [k for k in x if not torch.equal(x[k], y[k])]
        assert not different, f"{name}: {different}"
    assert epoch_metrics(a) == epoch_metrics(b)
    status_a, status_b = (json.loads((r / "run.json").read_text()) for r in (a, b))
    for key in ("best_epoch", "best_valid_loss", "valid_acc", "test_loss", "test_acc", "epochs_run"):
        assert status_a[key] == status_b[key], key
    meta_a, meta_b = read_checkpoint(a / "checkpoint.safetensors")[1], read_checkpoint(b / "checkpoint.safetensors")[1]
    assert without_seconds(meta_a["history"]) == without_seconds(meta_b["history"])
    assert meta_a["optimizer"] == meta_b["optimizer"] and meta_a["scheduler"] == meta_b["scheduler"]


def stop_after_epoch(k: int):
    """A train callback that sends this process SIGINT at the end of epoch k, like a Ctrl-C."""
    import os
    import signal

    def callback(state, run_dir):
        if state.epoch == k:
            os.kill(os.getpid(), signal.SIGINT)
    return callback


def signal_on_step(epoch: int, step: int):
    """A stand-in for train.epoch_bar_factory (the progress bar sees every step) that sends this
    process SIGINT after step `step` of epoch `epoch` (both counted from 0 and 1 as the bar does)."""
    import os
    import signal

    class SignalOnStep:
        def __init__(self, current):
            self.epoch = current

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, done, total):
            if self.epoch == epoch and done == step:
                os.kill(os.getpid(), signal.SIGINT)

    return lambda n_epochs, verbose: SignalOnStep
