"""Where a sweep's study lives: its storage, the config it was started with, and dead trials.

A study records its train config, search space and objective (a metric training/scoring.py
declares tunable, with its direction) when it is created, so that a later command
(or another machine) resumes it with `--study NAME` alone, and one that disagrees is refused.
Workers started at the same moment race to create the tables and the study: one wins, the
others open what it made and are held to its config like any resume.
A trial whose process died stays RUNNING in the storage; it is failed here, at once when it ran
on this host (its process is gone), otherwise by Optuna's heartbeat once it has been silent for
HEARTBEAT_GRACE seconds.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ptflow.config import RUNTIME, TrainConfig, fields_where
from ptflow.console import warn
from ptflow.errors import PtflowError, UsageError, first_line
from ptflow.files import database_file, refuse_target
from ptflow.sweep.space import ParamSpec, parse_specs
from ptflow.training import runs, scoring
from ptflow.training.tracking import redact_url as redact

HEARTBEAT_INTERVAL = 15  # seconds between a running trial's heartbeats in the storage
HEARTBEAT_GRACE = 60  # a trial silent this long is failed by the next worker that asks for a trial
CREATE_TRIES = 5  # opening a new database while other workers create its tables (see open_storage)
CONFIG_WAIT = 5  # seconds a study without ptflow's config may still be getting it from its creator
# Flags that may differ between the commands that resume or share a study: the runtime fields
# (config.py), which say where things are and how output looks, not what is trained. Every other
# flag must match the study's.
LOCAL_FIELDS = fields_where(role=RUNTIME)
OBJECTIVE = "best_valid_loss"  # what a study tunes unless --objective names another tunable metric


DEFAULT_DB = "sweeps.db"  # the SQLite file in the runs folder that holds studies without --storage


def default_storage(runs_dir: str) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / DEFAULT_DB}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The storage at url, made if it is not there (a SQLite file): call it only once the command
    has been checked, so that a usage error leaves nothing behind."""
    import sqlalchemy.exc

    if database_file(url):
        refuse_target(database_file(url))  # SQLite would write into a FIFO or a device as it found it
    # SQLite: wait for a lock rather than fail when several workers write at the same moment.
    engine_kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    for _ in range(CREATE_TRIES):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=HEARTBEAT_GRACE,
                heartbeat_stale_trial_callback=lambda study, trial: mark_run_failed(trial))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Workers started together on an empty database each create Optuna's tables, and all but
            # one fail with "duplicate key" or "already exists" (PostgreSQL: optuna#1092). The tables
            # are there now: opening again finds them.
            error = exc
            time.sleep(random.uniform(0.1, 0.5))
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as exc:
            raise UsageError(f"--storage {redact(url)}: not a database URL ({first_line(exc)})") from None
        except Exception as exc:  # unreachable server, missing driver, bad credentials, unwritable file
            raise PtflowError(f"cannot open sweep storage {redact(url)}: {first_line(exc)}") from None
    raise PtflowError(f"cannot open sweep storage {redact(url)}: {first_line(error)}")


def load_or_create(rdb, name: str, base: TrainConfig, given: set[str], specs: list[ParamSpec],
                   objective: str | None = None) -> tuple[TrainConfig, list[ParamSpec]]:
    """A new study records its config, search space and objective; a resumed one must agree with
    this command (objective None: the study's own)."""
    try:
        study = optuna.load_study(study_name=name, storage=rdb)
    except KeyError:
        if not specs:
            raise UsageError(f"no study {name!r} yet: give at least one --param NAME=SPEC to search") from None
        try:
            goal = scoring.objective(objective or OBJECTIVE).goal
            study = optuna.create_study(storage=rdb, study_name=name, direction=goal)
        except optuna.exceptions.DuplicatedStudyError:
            # Another worker created it since we looked: its config is the study's, and this
            # command must agree with it like any resume (not overwrite it with its own).
            study = optuna.load_study(study_name=name, storage=rdb)
        else:
            study.set_user_attr("ptflow_config", base.to_dict())
            study.set_user_attr("ptflow_objective", objective or OBJECTIVE)
            study.set_user_attr("ptflow_params", [str(s) for s in specs])  # last: once set, both are there
            return base, specs
    attrs = recorded_attrs(study)
    if "ptflow_params" not in attrs:
        raise UsageError(f"study {name!r} was not made by ptflow sweep; choose another --study")
    if objective and objective != objective_of(study):
        raise UsageError(f"study {name!r} tunes {objective_of(study)}; drop --objective or start a new --study")
    base = resume_config(attrs["ptflow_config"], base, given, name)
    stored = parse_specs(attrs["ptflow_params"], base)
    if specs and sorted(map(str, specs)) != sorted(map(str, stored)):
        raise UsageError(f"study {name!r} searches {' '.join(map(str, stored))}; give the same --param "
                         f"flags or none, or start a new --study")
    return base, stored


def objective_of(study: optuna.Study) -> str:
    """The metric a study tunes (studies from before objectives were recorded tune validation loss)."""
    return study.user_attrs.get("ptflow_objective", OBJECTIVE)


def recorded_attrs(study: optuna.Study) -> dict:
    """The study's user attributes, waiting briefly for a study created a moment ago by another
    worker: creating it and recording its config are separate writes."""
    deadline = time.monotonic() + CONFIG_WAIT
    attrs = study.user_attrs
    while "ptflow_params" not in attrs and time.monotonic() < deadline:
        time.sleep(0.1)
        attrs = study.user_attrs
    return attrs


def resume_config(stored: dict, base: TrainConfig, given: set[str], name: str) -> TrainConfig:
    """The study's config, with this command's local fields (paths, device, output)."""
    defaults = TrainConfig().to_dict()
    known = {k: v for k, v in stored.items() if k in defaults and k not in LOCAL_FIELDS}
    for key in sorted(given - LOCAL_FIELDS):
        if getattr(base, key) != known.get(key, defaults[key]):
            raise UsageError(f"study {name!r} was run with {key}={known.get(key, defaults[key])!r}, this command "
                             f"gives {getattr(base, key)!r}; drop the flag or start a new --study")
    local = {k: getattr(base, k) for k in LOCAL_FIELDS if k in defaults}
    return TrainConfig.from_dict({**known, **local})


def fail_dead_trials(study: optuna.Study) -> None:
    """Trials left running by a process of this host that is gone: failed now, not after the grace."""
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("host") != host or _alive(trial.user_attrs.get("pid")):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except ValueError:  # another worker finished it meanwhile
            continue
        mark_run_failed(trial)
        warn(f"trial {trial.number} was left running by a process that died: marked failed")


def _alive(pid: int | None) -> bool:
    if pid is None or pid == os.getpid():  # this process runs no trial yet
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def mark_run_failed(trial: optuna.trial.FrozenTrial) -> None:
    """The run folder of a trial whose process died says failed, where this machine can see it."""
    if "run_dir" not in trial.user_attrs:
        return
    run_dir = Path(trial.user_attrs["run_dir"])
    if (runs.read_json(run_dir / "run.json") or {}).get("status") == "running":
        runs.write_status(run_dir, status="failed", finished=time.time(), error="killed")
