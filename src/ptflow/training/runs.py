"""Run folders: one per training run, holding its config, metrics, model, plots and environment.

    runs/20261127-201500-mnist-mlp/
      config.json      the resolved TrainConfig
      run.json         status (running, finished, interrupted, failed), pid and host, timings, headline metrics
      metrics.jsonl    one JSON object per epoch
      env.json         versions, seed, git commit, data fingerprint, command line
      checkpoint.safetensors  the training state after the last completed epoch (see resume.py)
      model.safetensors, learning_curve.png

A run is named by its folder: a path, or its id (the folder's name) under the runs folder.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from ptflow.dist import is_main_process
from ptflow.errors import PtflowError, UsageError
from ptflow.files import append_line, atomic_write_text, write_json


def create(runs_dir: str, dataset: str, model: str, name: str | None = None) -> Path:
    """A new, empty run folder; an explicit name that already exists is an error, not an overwrite."""
    root = Path(runs_dir)
    if name is None:
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(dataset)}-{_slug(model)}"
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


def find(spec: str, runs_dir: str = "runs") -> Path:
    """The run folder `spec` names: a path, an id under runs_dir, or a unique prefix of one."""
    for path in (Path(spec), Path(runs_dir) / spec):
        if is_run(path):
            return path
    matches = [p for p in list_runs(runs_dir) if p.name.startswith(spec)] if spec else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"run id {spec!r} is ambiguous in {runs_dir}: {', '.join(p.name for p in matches[:5])}")
    raise PtflowError(f"no run {spec!r}: neither a run folder nor a run id in {runs_dir} "
                      f"(`ptflow runs --runs_dir DIR` lists them)")


def is_run(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "run.json").is_file()


def list_runs(runs_dir: str) -> list[Path]:
    """The run folders under runs_dir, oldest first (other files and folders are skipped)."""
    root = Path(runs_dir)
    runs = [p for p in root.iterdir() if p.is_dir() and is_run(p)] if root.is_dir() else []
    return sorted(runs, key=lambda p: ((read_json(p / "run.json") or {}).get("started") or 0, p.name))


def _slug(name: str) -> str:
    """A dataset or model name as a folder-name part: csv:data/x.csv -> x, my_pkg.nets:Wide -> Wide."""
    kind, _, path = name.partition(":")
    if path and kind in ("csv", "npz", "folder"):
        name = Path(path).stem
    elif path:  # an import path: its attribute names it
        name = path.rsplit(".", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "data"


def write_status(run: Path, **fields) -> None:
    """Merge fields into run.json (status, timings, headline metrics)."""
    current = read_json(run / "run.json") or {}
    write_json(run / "run.json", {**current, **fields})


def process() -> dict:
    """Who is running the run, so that a run whose process died can be told from a live one."""
    return {"pid": os.getpid(), "host": platform.node()}


def status(info: dict) -> str:
    """run.json's status, except that a "running" run whose process is gone shows as "crashed"."""
    value = info.get("status", "unknown")
    if value == "running" and info.get("host") == platform.node() and not _alive(info.get("pid")):
        return "crashed"  # killed (kill -9, out of memory, power): resumable from its last checkpoint
    return value


def _alive(pid) -> bool:
    if not isinstance(pid, int) or os.name == "nt":  # Windows' os.kill would terminate the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to someone else
        return True
    return True


def append_metrics(run: Path, record: dict) -> None:
    append_line(run / "metrics.jsonl", json.dumps(record))


def write_metrics(run: Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl as exactly `history` (on resume: drop epochs after the checkpoint)."""
    atomic_write_text(run / "metrics.jsonl", "".join(json.dumps(record) + "\n" for record in history))


def read_metrics(run: Path) -> list[dict]:
    """The per-epoch records; a line torn by a crash is skipped."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def environment(seed: int, fingerprint: str, device: str) -> dict:
    from ptflow.models.files import versions

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
