"""kill -9 a training run at random moments and during saves, resume it each time, and check
that nothing saved is ever lost and that the finished run equals one left alone, bit for bit.

Used by tests/test_faults.py (sized for CI) and bench/kill_soak.py (as many kills as asked).
Every run is `ptflow train` in a child process (children.py). A fault is one of:
- "timer": SIGKILL from outside after a random delay within the run's expected time;
- "replace-before" / "replace-after": the child kills itself right before or right after the
  n-th rename of an atomic write (checkpoint, run.json, model file, plot...);
- "fsync": the child cuts the temporary file it is writing to half and kills itself: a torn write.
After each kill: the checkpoint, if any, must load and never go back to an earlier epoch; the
next command is `--resume` (or a fresh start while no config.json exists) and must not fail.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import epoch_metrics
from helpers.children import Child, run
from ptflow.training.runs import read_json as runs_read_json

FAULTS = ("timer", "replace-before", "replace-after", "fsync")


@dataclass
class Tally:
    injected: int = 0  # SIGKILLs that landed
    survived: int = 0  # kills after which every check held and the run went on to finish
    lost: list[str] = field(default_factory=list)  # what was lost or corrupt (must stay empty)
    runs: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def train_args(runs_dir: Path, name: str, n_epochs: int) -> list[str]:
    # One thread, named: every run compared here trains on the same count (bit for bit needs it)
    return ["train", "--dataset", "digits", "--n_epochs", str(n_epochs), "--batch_size", "64", "--use_dropout",
            "--scheduler", "cosine", "--verbose", "0", "--runs_dir", str(runs_dir), "--run_name", name,
            "--num_threads", "1"]


def reference(root: Path, n_epochs: int) -> tuple[Path, float]:
    """The same run left alone, and how long it took (the timer draws its delays within that)."""
    started = time.monotonic()
    result = run(train_args(root / "runs", "reference", n_epochs), root)
    assert result.code == 0, result.err
    return root / "runs" / "reference", time.monotonic() - started


def kill_and_resume(root: Path, kills: int, n_epochs: int = 6, seed: int = 0) -> Tally:
    """Runs killed and resumed until `kills` kills have landed; each finished run compared to the reference."""
    import torch
    from safetensors.torch import load_file

    rng = random.Random(seed)
    ref, seconds = reference(root, n_epochs)
    ref_model, ref_metrics = load_file(ref / "model.safetensors"), epoch_metrics(ref)
    tally = Tally()
    while tally.injected < kills:
        tally.runs += 1
        run_dir = root / "runs" / f"killed-{tally.runs}"
        lost = len(tally.lost)
        landed = _until_finished(root, run_dir, n_epochs, seconds, rng, tally, kills)
        if len(tally.lost) > lost:
            continue
        model = load_file(run_dir / "model.safetensors")
        if model.keys() != ref_model.keys() or any(not torch.equal(model[k], ref_model[k]) for k in model):
            tally.lost.append(f"{run_dir.name}: final weights differ from the uninterrupted run")
        if epoch_metrics(run_dir) != ref_metrics:
            tally.lost.append(f"{run_dir.name}: per-epoch metrics differ from the uninterrupted run")
        leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".tmp")]
        if leftovers:
            tally.lost.append(f"{run_dir.name}: temporary files left: {leftovers}")
        if json.loads((run_dir / "run.json").read_text())["status"] != "finished":
            tally.lost.append(f"{run_dir.name}: not marked finished")
        if len(tally.lost) == lost:
            tally.survived += landed
    return tally


def _until_finished(root: Path, run_dir: Path, n_epochs: int, seconds: float, rng: random.Random,
                    tally: Tally, kills: int) -> int:
    """One run, killed at random until it finishes; returns the kills that landed on it."""
    landed, last_epoch = 0, 0
    for attempt in range(100):
        if (runs_read_json(run_dir / "run.json") or {}).get("status") == "finished":
            return landed  # the last kill landed after the run had recorded its end
        args = train_args(run_dir.parent, run_dir.name, n_epochs)
        if (run_dir / "config.json").exists():
            args += ["--resume", str(run_dir)]
        kind = rng.choice(FAULTS) if tally.injected < kills else None
        if kind == "timer":
            child = Child(args, root)
            time.sleep(rng.uniform(0.0, seconds))
            child.kill()
            result = child.wait()
        elif kind is not None:
            call, _, stage = kind.partition("-")
            # A whole 6-epoch run renames ~12 files and fsyncs ~18 times; a resumed one fewer.
            most = 10 if call == "replace" else 14
            result = run(args, root, fault={"call": call, "index": rng.randint(1, most), "stage": stage or "before"})
        else:
            result = run(args, root)
        if result.code == 0:
            return landed
        if result.code != -9:
            tally.lost.append(f"{run_dir.name}: attempt {attempt} failed with {result.code}: {result.err.strip()}")
            return landed
        landed += 1
        tally.injected += 1
        tally.by_kind[kind] = tally.by_kind.get(kind, 0) + 1
        last_epoch = _check_after_kill(run_dir, last_epoch, tally)
    tally.lost.append(f"{run_dir.name}: never finished")
    return landed


def _check_after_kill(run_dir: Path, last_epoch: int, tally: Tally) -> int:
    """What a kill may never do: damage the checkpoint or take it back to an earlier epoch."""
    from ptflow.errors import PtflowError
    from ptflow.training.checkpoint import read_checkpoint

    path = run_dir / "checkpoint.safetensors"
    if not path.exists():
        if last_epoch:
            tally.lost.append(f"{run_dir.name}: the checkpoint of epoch {last_epoch} disappeared")
        return last_epoch
    try:
        epoch = read_checkpoint(path)[1]["epoch"]
    except PtflowError as exc:
        tally.lost.append(f"{run_dir.name}: checkpoint unreadable after a kill: {exc}")
        return last_epoch
    if epoch < last_epoch:
        tally.lost.append(f"{run_dir.name}: checkpoint went back from epoch {last_epoch} to {epoch}")
    return max(epoch, last_epoch)

