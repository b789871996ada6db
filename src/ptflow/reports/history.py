"""`ptflow runs`: past runs as a table, one run in detail, several side by side.

Reads run folders only (run.json, config.json, metrics.jsonl), through training/runfiles.py,
which checks them, so listing is quick and needs no torch; a run whose files cannot be used is
listed as unreadable, with why, and the runs beside it are listed as usual. Every cell printed
passes through console.terminal_safe: a run's files and folder name are input, not terminal codes.
Only `compare` imports matplotlib, to overlay the learning curves in one PNG, and
numpy, to test whether the runs' test accuracies differ (significance.py). Test accuracies are
shown with their 95% Wilson interval. Each command prints tables, or with --json one JSON
document on stdout for scripts (the same facts, numbers unrounded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptflow import stats
from ptflow.config import RUNTIME, TrainConfig, fields_where
from ptflow.console import info
from ptflow.errors import PtflowError, UsageError
from ptflow.reports.tables import (
    format_duration,
    format_number,
    format_table,
    format_time,
    format_value,
    print_json,
)
from ptflow.training import runfiles, runs, scoring

# Config keys that say where things go or how they are shown, not what is trained: left out of
# the table's "hyperparameters that differ" (compare still shows every difference).
BOOKKEEPING = fields_where(role=RUNTIME)  # where and how a run executed, not what it trained


def metrics() -> tuple[str, ...]:
    """The rows of every run: status, the metrics scoring.py declares runs=ALWAYS, duration."""
    return ("status", *(m.run_key for m in scoring.declared(runs=scoring.ALWAYS)), "duration")


def optional_metrics() -> tuple[str, ...]:
    """The metrics declared runs=RECORDED: shown where a run has them."""
    return tuple(m.run_key for m in scoring.declared(runs=scoring.RECORDED))


# run.json facts about the data, not metrics, shown where a run has them: the image files that
# --bad_images skip left out (the run folder's bad_images.jsonl lists them).
EXTRA = {"bad_images": "images skipped"}
DEFAULTS = TrainConfig().to_dict()
EPOCH_COLUMNS = ["epoch", "train_loss", "valid_loss", "valid_acc", "lr", "seconds"]


@dataclass
class Run:
    """A run folder as read from disk."""

    path: Path
    record: dict  # run.json
    config: dict  # config.json
    history: list[dict]  # metrics.jsonl
    error: str | None = None  # why the run's files cannot be used (listing only: the other commands refuse it)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return runs.status(self.record)

    def metric(self, name: str):
        """A headline metric; for a run that never finished, what its epochs so far say."""
        if name == "status":
            return self.status
        value = self.record.get(name)
        if value is None and self.history and name in ("best_valid_loss", "best_epoch", "valid_acc", "epochs_run"):
            best = min(self.history, key=lambda h: h["valid_loss"])
            value = {"best_valid_loss": best["valid_loss"], "best_epoch": best["epoch"],
                     "valid_acc": best["valid_acc"], "epochs_run": self.history[-1]["epoch"]}[name]
        return value

    def setting(self, key: str):
        """A config value; an option added to ptflow since the run was made reads as its default."""
        return self.config.get(key, DEFAULTS.get(key))

    def processes(self) -> str:
        """How many processes trained it (torch.distributed's world size); "-" for runs from before it was recorded."""
        return format_value(self.record.get("world_size"))

    def seconds(self) -> float | None:
        if self.record.get("seconds") is not None and self.status == "finished":
            return self.record["seconds"]
        if self.history:  # stopped or still running: the time its epochs took
            return sum(h.get("seconds", 0) for h in self.history)
        return None


def load(path: Path) -> Run:
    """A run folder's files, checked: a file that cannot be used is a one-line RunFileError."""
    return Run(path, runfiles.read_record(path, "run.json") or {}, runfiles.read_record(path, "config.json") or {},
               runfiles.read_metrics(path))


def load_or_mark(path: Path) -> Run:
    """For listing: a run whose files cannot be used is kept, marked with why."""
    try:
        return load(path)
    except runfiles.RunFileError as exc:
        return Run(path, {}, {}, [], error=exc.short)


def environment(run: Run) -> dict:
    return runfiles.read_record(run.path, "env.json") or {}


def table(runs_dir: str, as_json: bool = False) -> None:
    """Every run in runs_dir, oldest first, with the hyperparameters that differ among them."""
    if not Path(runs_dir).is_dir():
        raise PtflowError(f"no runs folder {runs_dir} (pass --runs_dir DIR)")
    listed = [load_or_mark(path) for path in runs.list_runs(runs_dir)]
    if as_json:
        return print_json([as_dict(r) if r.error is None else unreadable(r) for r in listed])
    if not listed:
        info(f"no runs in {runs_dir}")
        return
    fixed = ("dataset", "model")  # always shown as columns of their own
    readable = [r for r in listed if r.error is None]
    keys = [k for k in differing_keys([r.config for r in readable]) if k not in BOOKKEEPING and k not in fixed]
    columns = [m.run_key for m in scoring.declared(column=True)  # a recorded-only one where some run has it
               if m.runs == scoring.ALWAYS or any(r.record.get(m.run_key) is not None for r in listed)]
    extra = [k for k in EXTRA if any(r.record.get(k) is not None for r in readable)]  # where some run has it
    headers = ["id", "started", *fixed, "processes", *keys, *map(label, columns), *map(EXTRA.get, extra),
               "duration", "status"]
    rows = [[r.id, format_time(r.record.get("started")), *(r.config.get(k, "?") for k in fixed), r.processes(),
             *(format_value(r.setting(k)) for k in keys), *(cell(r, name) for name in columns),
             *(format_value(r.record.get(k)) for k in extra), format_duration(r.seconds()), r.status]
            if r.error is None else [r.id, *["?"] * (len(headers) - 2), f"unreadable: {r.error}"]
            for r in listed]
    info(format_table(headers, rows))


def unreadable(run: Run) -> dict:
    """A run that cannot be listed, for --json: its id, and why."""
    return {"id": run.id, "path": str(run.path), "status": "unreadable", "error": run.error}


def show(spec: str, runs_dir: str, as_json: bool = False) -> None:
    run = load(runs.find(spec, runs_dir))
    if as_json:
        return print_json(as_dict(run, detail=True))
    info(format_table(["", ""], summary(run), header=False))
    if cv_rows(run):
        info(f"\ncross-validation ({run.record['cv']['folds']} folds)")
        info(format_table(CV_COLUMNS, cv_rows(run)))
    info("\nconfig")
    info(format_table(["", ""], [[k, format_value(v)] for k, v in run.config.items()], header=False))
    info("\nepochs")
    info(format_table(EPOCH_COLUMNS, epoch_rows(run)) if run.history else "(none completed)")


def summary(run: Run) -> list[list[str]]:
    """The facts `runs show` prints and a report opens with."""
    env = environment(run)
    rows = [["run", run.id], ["folder", str(run.path)], ["status", run.status],
            ["dataset", run.config.get("dataset", "?")], ["model", run.config.get("model", "?")],
            ["processes", run.processes()],
            ["started", format_time(run.record.get("started"))]]
    rows += [[label(name), cell(run, name)] for name in metrics()[1:]]
    rows += [[label(name), cell(run, name)] for name in optional_metrics() if run.record.get(name) is not None]
    rows += [[title, format_value(run.record[key])] for key, title in EXTRA.items() if run.record.get(key) is not None]
    rows += [["git commit", env.get("git_commit") or "?"], ["data fingerprint", env.get("data_fingerprint") or "?"],
             ["command", " ".join(env.get("command", [])) or "?"]]
    return rows


def cv_rows(run: Run) -> list[list[str]]:
    """A --folds run's cross-validation: each fold's best validation loss and accuracy, mean and std."""
    cv = run.record.get("cv")
    if not isinstance(cv, dict):
        return []
    rows = [[str(i), name, format_number(loss), format_number(acc), str(epoch)]
            for i, (name, loss, acc, epoch) in enumerate(zip(cv["runs"], cv["valid_loss"], cv["valid_acc"],
                                                             cv["best_epoch"]), 1)]
    rows.append(["mean", "", format_number(cv["valid_loss_mean"]), format_number(cv["valid_acc_mean"]), ""])
    rows.append(["std", "", format_number(cv["valid_loss_std"]), format_number(cv["valid_acc_std"]), ""])
    return rows


CV_COLUMNS = ["fold", "run", "best valid loss", "valid acc", "best epoch"]


def epoch_rows(run: Run) -> list[list[str]]:
    return [[format_number(h.get(c)) for c in EPOCH_COLUMNS] for h in run.history]


def compare(specs: list[str], runs_dir: str, out: str | None, as_json: bool = False) -> None:
    """Config differences, headline metrics side by side, whether the test accuracies differ
    significantly, and the learning curves overlaid in one PNG (with --json, only if out is given)."""
    if len(specs) < 2:
        raise UsageError("runs compare needs two or more runs")
    compared = [load(runs.find(spec, runs_dir)) for spec in specs]
    names = _labels(compared)
    keys = differing_keys([r.config for r in compared], ignore={"run_name"})
    from ptflow.reports import significance

    pairs, notes = significance.pairs([r.path for r in compared], names)
    if out is not None:
        from ptflow import plots

        plots.learning_curve({name: r.history for name, r in zip(names, compared)}, out)
    if as_json:
        return print_json({"runs": [{"name": name, **as_dict(r)} for name, r in zip(names, compared)],
                           "config_differences": {k: [r.setting(k) for r in compared] for k in keys},
                           "significance": pairs, "notes": notes, "learning_curves": out})
    info("config differences")
    info(format_table(["", *names], [[k, *(format_value(r.setting(k)) for r in compared)] for k in keys])
         if keys else "(none: the same config)")
    info("\nmetrics")
    rows = [[label(name), *(cell(r, name) for r in compared)] for name in metrics()]
    info(format_table(["", *names], rows))
    info("\nsignificance (McNemar's exact test: the examples one model gets right and the other wrong)")
    if pairs:
        info(format_table(significance.HEADERS, significance.rows(pairs)))
    for note in notes:
        info(note)
    info(f"\nWrote {out} (learning curves of {len(compared)} runs)")


def as_dict(run: Run, detail: bool = False) -> dict:
    """A run's facts for --json: its metrics unrounded, the test accuracy's 95% interval, its config;
    with detail, also its environment, cross-validation and every epoch."""
    values = {name: run.metric(name) for name in (*metrics()[1:], *optional_metrics()) if name != "duration"}
    accuracy, n = run.record.get("test_acc"), run.record.get("test_n")
    interval = list(stats.accuracy_interval(accuracy, n)) if accuracy is not None and n else None
    facts = {"id": run.id, "path": str(run.path), "status": run.status, "dataset": run.config.get("dataset"),
             "model": run.config.get("model"), "world_size": run.record.get("world_size"),
             "started": run.record.get("started"), "seconds": run.seconds(),
             **values, "test_acc_ci95": interval, "test_n": n, **{k: run.record.get(k) for k in EXTRA},
             "config": run.config}
    if detail:
        facts.update(env=environment(run), cv=run.record.get("cv"), epochs=run.history)
    return facts


def differing_keys(configs: list[dict], ignore: set[str] = frozenset()) -> list[str]:
    """Config keys whose values are not all the same, in TrainConfig's order (defaults fill gaps)."""
    keys = list(DEFAULTS) + sorted({k for c in configs for k in c} - set(DEFAULTS))
    return [k for k in keys if k not in ignore
            and len({repr(c.get(k, DEFAULTS.get(k))) for c in configs}) > 1]


def _labels(compared: list[Run]) -> list[str]:
    ids = [r.id for r in compared]
    return [str(r.path) if ids.count(r.id) > 1 else r.id for r in compared]


def cell(run: Run, metric: str) -> str:
    if metric == "duration":
        return format_duration(run.seconds())
    declared = scoring.by_run_key(metric)
    if declared is not None and declared.interval is scoring.WILSON:
        return format_accuracy(run.record, metric)
    if declared is not None and declared.interval and run.record.get(f"{metric}_ci95"):
        return f"{format_number(run.metric(metric))} {stats.format_interval(run.record[f'{metric}_ci95'])}"
    return format_number(run.metric(metric))


def label(metric: str) -> str:
    return scoring.label(metric)


def format_accuracy(record: dict, key: str = "test_acc") -> str:
    """A run's test accuracy (or other proportion) with its Wilson interval (runs from before intervals
    show the number alone)."""
    accuracy, n = record.get(key), record.get("test_n")
    if accuracy is None or not n:
        return format_number(accuracy)
    return f"{accuracy:.4f} {stats.format_interval(stats.accuracy_interval(accuracy, n))}"
