"""Run folders: one per training run, holding its config, metrics, model, plots and environment.

    runs/20261127-201500-mnist-mlp/
      config.json      the resolved TrainConfig
      run.json         status (running, finished, interrupted, failed), pid and host, timings, headline metrics
      metrics.jsonl    one JSON object per epoch
      env.json         versions, seed, git commit, data fingerprint, command line
      checkpoint.safetensors  the training state at the last epoch end, or where a signal stopped it (checkpoint.py)
      model.safetensors, learning_curve.png
      predictions.npz  each test example's predicted class and probability (predictions.py)
      bad_images.jsonl with --bad_images skip: each image file left out, with its problem and why

A run is named by its folder: a path, or its id (the folder's name) under the runs folder.
Its JSON files are read through runfiles.py, which checks them: a run folder is input.

One process at a time trains a run: the one holding its lock (flock on the run folder itself),
taken when the folder is created or a resume begins, and dropped when the run records how it
ended or its process dies (the operating system drops a killed process's locks, so a lock is
never stale). The holder records its pid and host in run.json as it starts. Generated names
are claimed with an exclusive mkdir, so runs started at the same moment never share a folder.
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

from ptflow.console import warn
from ptflow.data import bad_images
from ptflow.data.registry import is_format
from ptflow.errors import PtflowError, UsageError
from ptflow.files import (
    append_line,
    atomic_write_text,
    lock,
    overwrite_in_place,
    remove_temporaries,
    unlock,
    write_json,
)
from ptflow.training import distributed as dist
from ptflow.training import runfiles
from ptflow.training.distributed import is_main_process

MODEL = "model.safetensors"  # the run's model file, written when it finishes
ENDED = ("finished", "failed", "interrupted", "stopped", "pruned")  # statuses that end a process's hold
_held: dict[str, int] = {}  # run folders whose lock this process holds: resolved path -> descriptor


def create(runs_dir: str, dataset: str, model: str, name: str | None = None) -> Path:
    """A new run folder, locked by this process; an explicit name that already holds a run is an
    error, not an overwrite (a folder left empty by a run killed while starting is reused)."""
    root = Path(runs_dir)
    stem = _stem(dataset, model)
    if not is_main_process():  # the main process makes the folder; the others only need its name
        return root / (name or default_name(runs_dir, dataset, model))
    for n in range(1, 10_000):
        path = root / (name or (stem if n == 1 else f"{stem}-{n}"))
        try:
            path.mkdir(parents=True, exist_ok=name is not None)
        except FileExistsError:
            if name is not None:
                raise PtflowError(f"{path} exists and is not a folder; choose another --run_name") from None
            continue  # another run took this name a moment ago: try the next
        except OSError as exc:
            raise PtflowError(f"cannot create run folder {path}: {exc.strerror}") from None
        if not claim(path):
            if name is None:
                continue
            raise PtflowError(f"run folder {path} is in use ({_holder(path)}); choose another --run_name")
        if name is not None and is_run(path):
            release(path)
            raise taken(path)
        remove_temporaries(path)  # left by a run killed while it was starting in this folder
        return path
    raise PtflowError(f"cannot find a free run name {stem}-N in {root}")


def claim(run: Path) -> bool:
    """Take the run's lock for this process (again, if it holds it already); False if another has it."""
    key = str(Path(run).resolve())
    if key in _held:
        return True
    fd = lock(run)
    if fd is None:
        return False
    _held[key] = fd
    return True


def release(run: Path) -> None:
    fd = _held.pop(str(Path(run).resolve()), None)
    if fd is not None:
        unlock(fd)


def claim_or_refuse(run: Path) -> None:
    """Take the run's lock, or refuse with who holds it: one process trains a run at a time."""
    if not claim(run):
        raise PtflowError(f"{run} is being trained by another process ({_holder(run)}); "
                          f"wait for it to end or stop it first")


def _holder(run: Path) -> str:
    owner = read_json(Path(run) / "run.json") or {}
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}" if owner else "starting"


def taken(path: Path) -> PtflowError:
    return PtflowError(f"run folder {path} already exists; choose another --run_name")


def default_name(runs_dir: str, dataset: str, model: str) -> str:
    """timestamp-dataset-model, with -2, -3... when that folder exists already."""
    stem = _stem(dataset, model)
    name, n = stem, 2
    while (Path(runs_dir) / name).exists():
        name, n = f"{stem}-{n}", n + 1
    return name


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


def latest(runs_dir: str, holding: str | None = None) -> Path | None:
    """The run in runs_dir that started last, or the last one holding the file `holding`; None if none."""
    found = [run for run in list_runs(runs_dir) if holding is None or (run / holding).is_file()]
    return found[-1] if found else None


def _stem(dataset: str, model: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(dataset)}-{_slug(model)}"


def _slug(name: str) -> str:
    """A dataset or model name as a folder-name part: csv:data/x.csv -> x, my_pkg.nets:Wide -> Wide."""
    kind, _, path = name.partition(":")
    if is_format(name):
        name = Path(path).stem
    elif path:  # an import path: its attribute names it
        name = path.rsplit(".", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "data"


def write_status(run: Path, **fields) -> None:
    """Merge fields into run.json (status, timings, headline metrics).

    A status that ends the run releases its lock. Those are written while an error is being
    handled (a full disk, say), so they never raise: when no temporary file fits, run.json is
    rewritten in place, and if even that fails a warning says so (`ptflow runs` then shows the
    run as crashed, which resumes the same way).
    """
    record = {**(read_json(run / "run.json") or {}), **fields}
    status = fields.get("status")
    try:
        write_json(run / "run.json", record)
    except PtflowError as exc:
        if status not in ENDED or status == "finished":
            raise
        try:
            overwrite_in_place(run / "run.json", json.dumps(record, indent=2) + "\n")
        except OSError:
            warn(f"could not record status {status!r} in {run / 'run.json'} ({exc})")
    finally:
        if status in ENDED:
            release(run)


def process() -> dict:
    """Who is running the run, so that a run whose process died can be told from a live one."""
    return {"pid": os.getpid(), "host": platform.node()}


def status(info: dict) -> str:
    """run.json's status, except that a "running" run whose process is gone shows as "crashed"."""
    value = info.get("status", "unknown")
    if value == "running" and info.get("host") == platform.node() and not _alive(info.get("pid"), _recorded(info)):
        return "crashed"  # killed (kill -9, out of memory, power): resumable from its last checkpoint
    return value


def _recorded(info: dict):
    """When the run's process recorded itself (it started before): its last resume, or its start."""
    resumed = info.get("resumed")
    last = resumed[-1] if isinstance(resumed, list) and resumed and isinstance(resumed[-1], dict) else {}
    at = last.get("at", info.get("started"))
    return at if isinstance(at, (int, float)) else None


def _alive(pid, recorded: float | None = None) -> bool:
    """Whether the process `pid`, which recorded itself at time `recorded`, still runs.

    Not when it is a zombie: dead, its locks dropped, but not yet reaped by its parent (a process
    whose launcher was killed is reaped by init, which may take its time); nor when the pid now
    belongs to a process that started after the record, a later one that reuses it.
    """
    if not isinstance(pid, int) or os.name == "nt":  # Windows' os.kill would terminate the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to someone else
        pass
    state, started = _process_state(pid)
    if state in ("Z", "X"):
        return False
    # 2 s: the boot time that dates processes is in whole seconds
    return recorded is None or started is None or started <= recorded + 2


def _process_state(pid: int) -> tuple[str | None, float | None]:
    """A process's state letter (/proc/PID/stat) and when it started (seconds since the epoch);
    None for what /proc does not say (other systems)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None, None
    try:
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return fields[0] if fields else None, None


def append_metrics(run: Path, record: dict) -> None:
    append_line(run / "metrics.jsonl", json.dumps(record))


def write_metrics(run: Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl as exactly `history` (on resume: drop epochs after the checkpoint)."""
    atomic_write_text(run / "metrics.jsonl", "".join(json.dumps(record) + "\n" for record in history))


def write_bad_images(run: Path, skipped: list[dict]) -> None:
    """The image files --bad_images skip left out, one JSON object a line: file, problem, reason."""
    atomic_write_text(run / bad_images.FILE, "".join(json.dumps(record) + "\n" for record in skipped))


def read_json(path: Path) -> dict | None:
    """A run file (run.json, config.json, env.json) for bookkeeping that must go on regardless:
    None when it is missing or unusable (runfiles.read_record says why, for commands that show it)."""
    try:
        return runfiles.read_record(path.parent, path.name)
    except PtflowError:
        return None


def environment(seed: int, fingerprint: str, device: str) -> dict:
    from ptflow.models.files import versions

    return {"versions": versions(), "seed": seed, "data_fingerprint": fingerprint, "device": device,
            **processes(device), "git_commit": git_commit(), "command": sys.argv, "cwd": os.getcwd(),
            "host": platform.node(), "platform": platform.platform()}


def processes(device: str) -> dict:
    """How many processes train the run, and the backend that carries their gradients."""
    world = dist.world_size()
    return {"world_size": world, "backend": dist.backend_of(device.split(":")[0]) if world > 1 else None}


def git_commit() -> str | None:
    """The commit of the ptflow source tree when it is a git checkout (an editable install)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
