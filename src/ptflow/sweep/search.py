"""`ptflow sweep`: tune hyperparameters with Optuna, every trial a normal training run.

TPE proposes each trial's hyperparameters from the trials so far; median pruning stops a trial
whose validation loss is worse, at the same epoch, than the median of the finished trials.
Selection sees validation numbers only: the objective is best_valid_loss (with --folds K, the
mean of the K folds' best validation losses, so small datasets are tuned on more than one split),
or with --objective another metric that training/scoring.py declares tunable, scored on the
validation split, in the direction it declares (such a study is not pruned: only the loss is
known per epoch). The test split is judged once, for the winner, at the end, and its accuracy
shown with its 95% interval.

The study lives in an Optuna RDB storage, SQLite in the runs folder unless --storage names another
(postgresql://..., mysql://...), so several machines can run the same command against one study,
and --study NAME resumes one (sweep_study.py). A trial that fails, or whose process died, is
recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import socket
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from ptflow import stats
from ptflow.config import TrainConfig
from ptflow.console import info, warn
from ptflow.errors import PtflowError, RunStopped, UsageError, first_line
from ptflow.files import database_file
from ptflow.sweep import report as sweep_report
from ptflow.sweep import study as sweep_study
from ptflow.sweep.space import ParamSpec, config_values, parse_space
from ptflow.training import checkpoint, folds, runs, scoring, tracking, train
from ptflow.training.tracking import redact_url as redact

TRIAL_ERRORS = (PtflowError, torch.cuda.OutOfMemoryError)  # fail the trial, not the sweep


class PrunedTrial(optuna.TrialPruned, RunStopped):
    """Raised from the epoch callback: Optuna records the trial pruned, its run folder says so too."""

    status = "pruned"


def run_sweep(base: TrainConfig, given: set[str], params: list[str], n_trials: int, study_name: str | None = None,
              storage: str | None = None, pruner: str = "median", prune_after: int = 5, prune_warmup: int = 1,
              objective: str | None = None, space: str | None = None) -> dict:
    """Run n_trials more trials of the study; `given` names the train flags set on the command line;
    objective names what it tunes (None: the study's, or validation loss for a new one); space
    names a search space of space.SPACES, searched beside the --param specs."""
    for name in ("model_fn", "run_name"):
        if name in given:
            raise UsageError(f"--{name} does not apply to a sweep: every trial has its own run folder")
    specs = parse_space(space, params, base, given)  # bad specs fail here, before any storage or training
    if not specs and study_name is None:
        raise UsageError("nothing to search: give --param NAME=SPEC or --space NAME (or --study NAME to resume "
                         "a study)")
    tracking.require(base.log)
    if objective is not None:
        scoring.objective(objective)  # a metric that is not tunable fails here
        if base.folds and objective != sweep_study.OBJECTIVE:
            raise UsageError(f"--objective {objective}: with --folds a sweep tunes the folds' mean validation loss")
    study_name = study_name or time.strftime("sweep-%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", study_name):
        raise UsageError(f"--study {study_name!r}: use letters, digits, '.', '_' and '-' (it names run folders)")
    check_names(base, specs)
    url = storage or sweep_study.default_storage(base.runs_dir)
    database = database_file(url)
    if not specs and database is not None and not Path(database).exists():  # without making an empty one
        raise UsageError(f"no study {study_name!r} yet (no {database}): give at least one --param NAME=SPEC "
                         f"to search")
    if storage is None:  # the default SQLite file's folder, made only now that the command is checked
        try:
            Path(base.runs_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PtflowError(f"cannot create --runs_dir {base.runs_dir}: {exc.strerror or exc}") from None
    with quiet_optuna():
        rdb = sweep_study.open_storage(url)
        base, specs = sweep_study.load_or_create(rdb, study_name, base, given, specs, objective)
        study = optuna.load_study(study_name=study_name, storage=rdb, sampler=TrialSeededTPE(base.seed),
                                  pruner=build_pruner(pruner, prune_after, prune_warmup))
        metric = scoring.objective(sweep_study.objective_of(study))
        sweep_study.fail_dead_trials(study)
        info(f"Study {study_name} ({len(study.trials)} trials so far) in {redact(url)}; "
             f"searching {', '.join(str(s) for s in specs)}")
        # gc after each trial: a long sweep on a GPU must not keep old trials' tensors alive in cycles
        try:
            study.optimize(trial_objective(base, specs, metric), n_trials=n_trials, catch=TRIAL_ERRORS,
                           callbacks=[announce], gc_after_trial=True)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the trial in progress is recorded failed
            info(f"Interrupted: the study keeps every trial that ended. Continue with: "
                 f"{more_trials_command(study.study_name, base, storage)}")
            raise
    return summarise(study, base, specs, url, storage, metric)


def check_names(base: TrainConfig, specs: list[ParamSpec]) -> None:
    """The dataset and model that every trial would load, found now: a typo is one usage error
    before any storage or run folder exists, not a failure in every trial."""
    from ptflow.data import registry as datasets
    from ptflow.models import registry as models

    datasets.source(base.dataset)
    searched = next((spec for spec in specs if spec.name == "model"), None)  # --param model=choice:...
    for model in searched.choices if searched else (base.model,):
        models.source(model)


def more_trials_command(study_name: str, base: TrainConfig, storage: str | None) -> str:
    return shlex.join(["ptflow", "sweep", "--study", study_name, "--trials", "N",
                       *(["--storage", redact(storage)] if storage else []),
                       *(["--runs_dir", base.runs_dir] if base.runs_dir != TrainConfig().runs_dir else [])])


def build_pruner(name: str, prune_after: int, prune_warmup: int) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    # Steps are 1-based epochs and MedianPruner never prunes at step < n_warmup_steps.
    return optuna.pruners.MedianPruner(n_startup_trials=prune_after, n_warmup_steps=prune_warmup + 1)


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose randomness for trial n depends on (seed, n) alone.

    One TPESampler seeded once per process would repeat its first draws when a study is resumed,
    and every worker of a shared study would propose the same trials. Seeding by trial number
    keeps a sweep reproducible from --seed and still gives each trial its own draw.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._samplers: dict[int, optuna.samplers.TPESampler] = {}

    def _tpe(self, trial) -> optuna.samplers.TPESampler:
        if trial.number not in self._samplers:
            seed = int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0])
            self._samplers[trial.number] = optuna.samplers.TPESampler(seed=seed)
        return self._samplers[trial.number]

    def infer_relative_search_space(self, study, trial):
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._tpe(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        sampler = self._samplers.pop(trial.number, None)
        if sampler is not None:  # None: a trial of another process, failed here by fail_dead_trials
            sampler.after_trial(study, trial, state, values)


def trial_objective(base: TrainConfig, specs: list[ParamSpec], metric: scoring.Metric):
    """A trial trains one config and returns metric's validation value (pruned by validation loss
    only when that is what it tunes)."""
    by_loss = metric.objective_key == sweep_study.OBJECTIVE

    def run_trial(trial: optuna.Trial) -> float:
        sampled = {spec.name: suggest(trial, spec) for spec in specs}
        run_name = f"{trial.study.study_name}-trial{trial.number:03d}"
        run_dir = (Path(base.runs_dir) / run_name).resolve()
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        try:
            config = TrainConfig.from_dict({**config_values(base.to_dict(), specs, sampled), "run_name": run_name})
            if config.folds:  # the objective is the folds' mean; the trial's own run is the final model
                metrics = folds.cross_validate(config, fold_pruning_callback(trial), evaluate_test=False,
                                               show_summary=False)
                trial.set_user_attr("cv", {k: metrics["cv"][k] for k in ("valid_loss", "valid_loss_std")})
            else:
                callbacks = [pruning_callback(trial)] if by_loss else []
                metrics = train.train_model(config, callbacks, evaluate_test=False, resume_hint=False)
        except PrunedTrial:
            drop_checkpoints(run_dir)
            raise
        except TRIAL_ERRORS as exc:  # a bad combination, a diverged run, out of memory: this trial only
            trial.set_user_attr("error", first_line(exc))
            raise
        drop_checkpoints(run_dir)
        return metrics["cv"]["valid_loss_mean"] if config.folds else metrics[metric.objective_key]

    return run_trial


def drop_checkpoints(run_dir: Path) -> None:
    """The trial's run folder's checkpoint, and those of its fold runs (--folds)."""
    for path in [run_dir, *run_dir.parent.glob(f"{run_dir.name}-fold*")]:
        checkpoint.drop(path)


def suggest(trial: optuna.Trial, spec: ParamSpec):
    if spec.kind == "choice":
        return trial.suggest_categorical(spec.name, list(spec.choices))
    if spec.is_int:
        return trial.suggest_int(spec.name, spec.low, spec.high, step=spec.step or 1, log=spec.kind == "loguniform")
    return trial.suggest_float(spec.name, spec.low, spec.high, log=spec.kind == "loguniform")


def pruning_callback(trial: optuna.Trial):
    """A train callback: report each epoch's validation loss, stop the run when the pruner says so.
    With --ema, the lower of the raw weights' and the EMA's: the run keeps whichever is better, so
    a trial whose EMA is good is not pruned for its raw weights' loss."""

    def report(state, run_dir: Path) -> None:
        epoch = state.history[-1]
        loss = min(epoch["valid_loss"], epoch.get("ema_valid_loss", math.inf))
        if math.isfinite(loss):  # a diverged epoch is left out; the run itself then fails
            trial.report(loss, state.epoch)
        if trial.should_prune():
            raise PrunedTrial(f"pruned at epoch {state.epoch}")

    return report


def fold_pruning_callback(trial: optuna.Trial):
    """With --folds, a trial reports after each fold the mean best validation loss of its folds so
    far (step = folds done), so the pruner compares trials after the same number of folds."""

    def report(done: int, results: list[dict]) -> None:
        trial.report(stats.mean_std([r["best_valid_loss"] for r in results])[0], done)
        if trial.should_prune():
            raise PrunedTrial(f"pruned after fold {done}")

    return report


def announce(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial (Optuna's own log is silenced: it prints tracebacks)."""
    params = ", ".join(f"{k}={sweep_report.show(v)}" for k, v in trial.params.items())
    cv = trial.user_attrs.get("cv")
    if trial.state == TrialState.COMPLETE and cv:
        info(f"trial {trial.number} finished: mean valid_loss={trial.value:.4e} (std {cv['valid_loss_std']:.2e} "
             f"over {len(cv['valid_loss'])} folds)  {params}")
    elif trial.state == TrialState.COMPLETE:
        tuned = sweep_study.objective_of(study)
        name = "valid_loss" if tuned == sweep_study.OBJECTIVE else tuned
        info(f"trial {trial.number} finished: {name}={trial.value:.4e}  {params}")
    elif trial.state == TrialState.PRUNED:
        step = "after fold" if study.user_attrs.get("ptflow_config", {}).get("folds") else "at epoch"
        info(f"trial {trial.number} pruned {step} {trial.last_step}  {params}")
    else:
        warn(f"trial {trial.number} failed: {trial.user_attrs.get('error', 'see its run folder')}  {params}")


def summarise(study: optuna.Study, base: TrainConfig, specs: list[ParamSpec], url: str,
              storage: str | None, metric: scoring.Metric | None = None) -> dict:
    """Leaderboard, the winner judged on the test split, its train command, the HTML report."""
    metric = metric or scoring.objective(sweep_study.OBJECTIVE)
    trials = study.get_trials(deepcopy=False)
    rows = sweep_report.leaderboard(trials, [s.name for s in specs], metric)
    info("\n" + sweep_report.format_table(rows, [s.name for s in specs], base.folds, metric))
    report = Path(base.runs_dir) / f"{study.study_name}.html"
    resume = more_trials_command(study.study_name, base, storage)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        sweep_report.write_html(report, study, rows, [s.name for s in specs], None, None, redact(url), base.folds,
                                metric)
        raise PtflowError(f"no trial of study {study.study_name} has finished; report in {report}")
    best = study.best_trial
    command = sweep_report.train_command(trial_config(base, specs, best))
    test = judge(best, base)
    sweep_report.write_html(report, study, rows, [s.name for s in specs], command, test, redact(url), base.folds,
                            metric)
    info(f"\nBest trial {best.number}: {sweep_report.objective_name(base, metric)}={best.value:.4e}  "
         f"test_acc={sweep_report.format_test(test)}")
    info(f"Best configuration:\n  {command}")
    info(f"Report: {report}\nMore trials: {resume}")
    return {"study": study.study_name, "best_trial": best.number, metric.objective_key: best.value,
            **(test or {"test_acc": None}), "command": command, "report": str(report)}


def trial_config(base: TrainConfig, specs: list[ParamSpec], trial: optuna.trial.FrozenTrial) -> TrainConfig:
    values = config_values(base.to_dict(), specs, trial.params)
    return TrainConfig.from_dict({**values, "run_name": None, "verbose": TrainConfig().verbose})


def judge(trial: optuna.trial.FrozenTrial, base: TrainConfig) -> dict | None:
    """The winner's test accuracy with its interval, computed once from its saved model and kept in
    its run.json; None when its model is not on this machine."""
    from ptflow.reports import evaluate

    run_dir = Path(trial.user_attrs.get("run_dir", ""))
    model = run_dir / "model.safetensors"
    if not model.is_file():
        warn(f"the best trial's model {model} is not on this machine: judge it where it is, with "
             f"ptflow evaluate --model_fn {model}")
        return None
    # Workers of one study that end together may pick the same winner: the first to take the lock
    # judges it, the others wait and read its result.
    with exclusive(run_dir / ".judge.lock"):
        status = runs.read_json(run_dir / "run.json") or {}
        if status.get("test_acc") is None:  # else judged by an earlier command (or worker) of this study
            info(f"\nTest split, judged once, for the best trial {trial.number} ({run_dir}):")
            # The winner's architecture is the one this study trains (its own config), not a stranger's file.
            result = evaluate.evaluate_model(str(model), base.data_dir, base.device_name(), trust_code=True)
            status = {"test_acc": result["accuracy"], "test_acc_ci95": result["accuracy_ci95"], "test_n": result["n"]}
            runs.write_status(run_dir, **status)
    return {k: status.get(k) for k in ("test_acc", "test_acc_ci95", "test_n")}


@contextmanager
def exclusive(path: Path):
    """An exclusive lock on path (created if missing) for the block; the OS drops it if the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; at worst a winner is judged twice, to the same accuracy
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextmanager
def quiet_optuna():
    """Optuna logs every trial, and a failed one with its traceback; `announce` says it in one line."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat, plots
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)

