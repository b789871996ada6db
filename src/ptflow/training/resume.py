"""`ptflow train --resume RUN`: which run continues, with which config, and which flags may change.

The run's own config.json says what it trains; the flags given with --resume may change only
what is declared changeable (where files go, what is shown, how long it trains), so that the
resumed run stays the experiment that started. Output paths are taken from the command line,
never from the folder, which may come from elsewhere. What the training state must still match
is identity.py's; the state itself is restored by checkpoint.py.
"""

from __future__ import annotations

from pathlib import Path

from ptflow.config import TrainConfig, fields_where
from ptflow.console import warn
from ptflow.errors import PtflowError, UsageError, shown
from ptflow.training import runs
from ptflow.training.checkpoint import CHECKPOINT
from ptflow.training.distributed import is_main_process

# What --resume may change is declared on each TrainConfig field (resume=True): where files go,
# what is printed or logged, and how long training goes on. Anything else would make the resumed
# run a different experiment from the one that started. The device may change too (a GPU taken
# back), with a warning that the numbers will then differ from an uninterrupted run. So may the
# fields declared exact=True (the thread count, recorded in the run's config): the run continues
# with its recorded value unless one is given on purpose, which is warned of in the same words.
CHANGEABLE = tuple(sorted(fields_where(resume=True)))
INEXACT = tuple(sorted(fields_where(resume=True, exact=True)))


def resolve(spec: str, given: dict, restarting: bool = False) -> tuple[Path, TrainConfig]:
    """The run folder to resume and its config, with the flags (or config-file values) `given`.

    Values equal to the saved ones are fine (the original command line with --resume added
    works); a changed value is refused unless it is in CHANGEABLE. `restarting`: torchrun
    restarted this job after a process failed, so a run still marked "running" is this job's own.
    The run's lock is taken first and kept for the resumed run: a second resume of the same run
    is refused, never interleaved with the first.
    """
    run_dir = runs.find(spec, given.get("runs_dir", TrainConfig.runs_dir))
    refuse_special_files(run_dir)
    if is_main_process():
        runs.claim_or_refuse(run_dir)
    try:
        return run_dir, _resolved_config(run_dir, given, restarting)
    except BaseException:
        runs.release(run_dir)
        raise


def refuse_special_files(run_dir: Path) -> None:
    """A run folder may come from someone else: a link in it (metrics.jsonl -> ~/.bashrc) would
    make the resumed run write through it, outside the folder, and a FIFO or a device would block
    or swallow its writes. Refused before anything is read or written, the lock file included;
    folders (tensorboard/) are fine."""
    try:
        entries = sorted(run_dir.iterdir())
        links = [entry.name for entry in entries if entry.is_symlink()]
        special = [entry.name for entry in entries if not (entry.is_symlink() or entry.is_file() or entry.is_dir())]
    except OSError as exc:
        raise PtflowError(f"cannot read run folder {run_dir}: {exc.strerror or exc}") from None
    if links:
        what = "is a symbolic link" if len(links) == 1 else "are symbolic links"
        raise PtflowError(f"{run_dir}: {', '.join(links[:3])} {what}; ptflow does not resume a run folder with "
                          f"links in it (it would write through them): copy the run's files instead")
    if special:
        what = "is not a regular file" if len(special) == 1 else "are not regular files"
        raise PtflowError(f"{run_dir}: {', '.join(special[:3])} {what} (a FIFO, a socket or a device); ptflow "
                          f"resumes a run folder of files and folders only")


def _resolved_config(run_dir: Path, given: dict, restarting: bool) -> TrainConfig:
    saved = runs.read_json(run_dir / "config.json")
    if not isinstance(saved, dict):
        raise PtflowError(f"{run_dir}: no readable config.json, so it cannot be resumed")
    saved = {**TrainConfig().to_dict(), **saved}  # options added to ptflow since the run started: defaults
    record = runs.read_json(run_dir / "run.json") or {}
    status = runs.status(record)
    if status == "running" and not restarting:  # alive, yet unlocked: a ptflow from before run locks
        raise PtflowError(f"{run_dir} is still running (pid {record.get('pid')} on {record.get('host')}); "
                          f"stop it first")
    # An exact field given as None (the original config file's "torch's default") keeps the value recorded
    given = {k: v for k, v in given.items() if not (k in INEXACT and v is None)}
    changes = {k: v for k, v in given.items() if k != "runs_dir" and saved.get(k) != v}
    refused = [k for k in changes if k not in CHANGEABLE]
    if refused:
        listed = ", ".join(f"--{k} ({shown(saved.get(k))} -> {shown(changes[k])})" for k in refused)
        raise UsageError(f"--resume continues {run_dir.name} as it was configured and cannot change {listed}; "
                         f"only {', '.join('--' + k for k in CHANGEABLE)} may differ")
    try:
        config = TrainConfig.from_dict({**saved, **changes, **_outputs(run_dir, saved, given)})
    except UsageError as exc:
        raise UsageError(f"{run_dir / 'config.json'}: {exc}") from None
    if "n_epochs" in changes and config.scheduler != "none":
        raise UsageError(f"--n_epochs cannot change on --resume with --scheduler {config.scheduler}: "
                         f"the learning-rate schedule was planned for {saved['n_epochs']} epochs")
    if status == "finished" and not {"n_epochs", "early_stop"} & set(changes):
        raise UsageError(f"{run_dir.name} already finished ({record.get('epochs_run')} epochs); "
                         f"pass a larger --n_epochs to train it longer")
    if status in ("finished", "pruned") and not (run_dir / CHECKPOINT).is_file():
        raise PtflowError(f"{run_dir.name} kept no checkpoint to continue from (sweep trials drop theirs when "
                          f"they end); train its settings again instead (`ptflow runs show {run_dir.name}`)")
    for name in sorted(set(changes) & set(INEXACT)):
        if saved.get(name) is not None:  # None: the run predates the field and recorded no value
            warn(f"{run_dir.name} ran with --{name} {saved[name]} and continues with {changes[name]}: the numbers "
                 f"will differ from an uninterrupted run (bit-exact resume needs the same --{name})")
    return config


def _outputs(run_dir: Path, saved: dict, given: dict) -> dict:
    """Where a resumed run writes: where the user asked, never where its config.json says.

    A run folder may come from another machine or another person, so the output paths saved in
    it (declared with writes=True in config.py) are not trusted: the run's files go to the run
    folder named on the command line, and a model file or tracking store only where a flag given
    now says.
    """
    outputs = {"runs_dir": str(run_dir.parent), "run_name": run_dir.name}
    for name in sorted(fields_where(writes=True) - set(outputs)):
        outputs[name] = given.get(name)
        if saved.get(name) and name not in given:
            warn(f"{run_dir.name} was started with --{name} {saved[name]}; give --{name} again to write there")
    return outputs
