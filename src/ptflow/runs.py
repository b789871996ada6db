"""Run folders: one per training run, holding its config, metrics, model, plots and environment.

    runs/20261127-201500-mnist-mlp/
      config.json      the resolved TrainConfig
      run.json         status (running, finished, interrupted, failed), timings, headline metrics
      metrics.jsonl    one JSON object per epoch
      env.json         versions, seed, git commit, data fingerprint, command line
      model.safetensors, learning_curve.png
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from ptflow.dist import is_main_process
from ptflow.errors import PtflowError
from ptflow.files import append_line, write_json


def create(runs_dir: str, dataset: str, model: str, name: str | None = None) -> Path:
    """A new, empty run folder; an explicit name that already exists is an error, not an overwrite."""
    root = Path(runs_dir)
    if name is None:
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(dataset)}-{model}"
        name, n = stem, 2
        while (root / name).exists():
            name, n = f"{stem}-{n}", n + 1
    path = root / name
    if is_main_process():
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise PtflowError(f"run folder {path} already exists; choose another --run_name") from None
        except OSError as exc:
            raise PtflowError(f"cannot create run folder {path}: {exc.strerror}") from None
    return path


def _slug(dataset: str) -> str:
    kind, _, path = dataset.partition(":")
    return Path(path).stem if path else kind


def write_status(run: Path, **fields) -> None:
    """Merge fields into run.json (status, timings, headline metrics)."""
    current = read_json(run / "run.json") or {}
    write_json(run / "run.json", {**current, **fields})


def append_metrics(run: Path, record: dict) -> None:
    append_line(run / "metrics.jsonl", json.dumps(record))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def environment(seed: int, fingerprint: str, device: str) -> dict:
    from ptflow.checkpoint import versions

    return {"versions": versions(), "seed": seed, "data_fingerprint": fingerprint, "device": device,
            "git_commit": git_commit(), "command": sys.argv, "cwd": os.getcwd(),
            "host": platform.node(), "platform": platform.platform()}


def git_commit() -> str | None:
    """The commit of the ptflow source tree when it is a git checkout (an editable install)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
