"""What a sweep shows: the leaderboard, the best configuration as a command, an HTML report.

The winner's test accuracy is shown with its 95% Wilson interval; with --folds, each trial's
objective is the mean of its folds' best validation losses, shown with their standard deviation.
A study that tunes another metric (--objective) ranks and labels its trials by that metric's
declaration (training/scoring.py).
The report is one self-contained HTML file (reports/html.py), images included.
Plots come from optuna.visualization.matplotlib, drawn with the Agg backend (no display needed).
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import time
import warnings
from pathlib import Path

from ptflow import stats
from ptflow.config import TrainConfig
from ptflow.files import atomic_write_text
from ptflow.reports.html import escape, image, page, section, table
from ptflow.training import scoring

STATE_ORDER = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "fail": 4}


def _loss(metric: scoring.Metric | None) -> bool:
    return metric is None or metric.objective_key == "best_valid_loss"


def leaderboard(trials: list, names: list[str], metric: scoring.Metric | None = None) -> list[dict]:
    """One row per trial, best first: finished by the objective (validation loss unless metric
    says otherwise), then pruned, running and failed."""
    sign = -1 if metric is not None and metric.goal == scoring.MAXIMIZE else 1
    rows = []
    for trial in trials:
        state = trial.state.name.lower()
        losses = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
        # A pruned trial's loss is the best it reached before it was stopped.
        loss = trial.value if state == "complete" else min(losses, default=None)
        seconds = None
        if trial.datetime_start and trial.datetime_complete:
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        cv = trial.user_attrs.get("cv") or {}
        rows.append({"trial": trial.number, "state": state, **{n: trial.params.get(n) for n in names},
                     "value": loss, "valid_loss_std": cv.get("valid_loss_std"),
                     "epochs": max(trial.intermediate_values, default=0), "seconds": seconds})
    rows.sort(key=lambda r: (STATE_ORDER.get(r["state"], 9),
                             math.inf if r["value"] is None else sign * r["value"], r["trial"]))
    return rows


def show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cells(row: dict, names: list[str], folds: int = 0) -> list[str]:
    loss = "-" if row["value"] is None else f"{row['value']:.4e}"
    seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f}"
    spread = [] if not folds else ["-" if row["valid_loss_std"] is None else f"{row['valid_loss_std']:.2e}"]
    return [str(row["trial"]), row["state"], *(show(row[n]) for n in names), loss, *spread, str(row["epochs"]),
            seconds]


def _header(names: list[str], folds: int = 0, metric: scoring.Metric | None = None) -> list[str]:
    if folds:  # a trial's step is a fold: it reports the mean of its folds so far
        return ["trial", "state", *names, f"mean valid loss ({folds} folds)", "std", "folds", "seconds"]
    tuned = "best valid loss" if _loss(metric) else f"valid {metric.name.replace('_', ' ')}"
    return ["trial", "state", *names, tuned, "epochs", "seconds"]


def objective_name(config: TrainConfig, metric: scoring.Metric | None = None) -> str:
    if config.folds:
        return f"mean_valid_loss({config.folds} folds)"
    return "valid_loss" if _loss(metric) else metric.objective_key


def format_test(test: dict | None) -> str:
    """The winner's test accuracy with its interval, or why there is none."""
    if not test or test.get("test_acc") is None:
        return "not judged here"
    interval = stats.format_interval(test.get("test_acc_ci95"))
    return f"{test['test_acc']:.4f}" + (f" (95% CI {interval}, {test['test_n']:,} test examples)" if interval else "")


def format_table(rows: list[dict], names: list[str], folds: int = 0, metric: scoring.Metric | None = None) -> str:
    table = [_header(names, folds, metric)] + [_cells(row, names, folds) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in table)


def train_command(config: TrainConfig) -> str:
    """`ptflow train` with the flags that differ from the defaults, quoted for a POSIX shell."""
    words = ["ptflow", "train"]
    for field in dataclasses.fields(TrainConfig):
        value, default = getattr(config, field.name), getattr(TrainConfig(), field.name)
        if value == default or value is None or value is False:
            continue  # every bool flag defaults to off; None is never a flag's value
        words.append(f"--{field.name}")
        if isinstance(value, list):
            words.append(",".join(map(str, value)))
        elif value is not True:
            words.append(str(value))  # str(float) round-trips exactly
    return shlex.join(words)


def write_html(path: Path, study, rows: list[dict], names: list[str], command: str | None,
               test: dict | None, storage: str, folds: int = 0, metric: scoring.Metric | None = None) -> None:
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in states.items())
    ranked = f"mean validation loss of {folds} folds" if folds else "validation loss" if _loss(metric) else \
        f"validation {metric.name.replace('_', ' ')}"
    best_word = "lowest" if metric is None or metric.goal == scoring.MINIMIZE else "highest"
    if command is None:
        best = "No trial has finished yet."
    else:
        judged = format_test(test).replace("not judged here", "not judged on this machine")
        best = (f"Trial {rows[0]['trial']} has the {best_word} {ranked}, {rows[0]['value']:.4e}. Its test accuracy, "
                f"judged once, after selection: {judged}.")
    parts = [f"<h1>Sweep {escape(study.study_name)}</h1>",
             f"<p>{len(rows)} trials ({escape(summary)}) in <code>{escape(storage)}</code>, written "
             f"{escape(time.strftime('%Y-%m-%d %H:%M'))}. Trials are ranked by their {escape(ranked)} alone.</p>",
             section("Best", f"<p>{escape(best)}</p>")]
    if command:
        parts.append(f"<pre>{escape(command)}</pre>")
    parts.append(section("Leaderboard", table([_cells(row, names, folds) for row in rows],
                                              _header(names, folds, metric))))
    parts += _plot_sections(study, folds, None if _loss(metric) else ranked)
    atomic_write_text(path, page(f"Sweep {study.study_name}", parts))


def _plot_sections(study, folds: int = 0, tuned: str | None = None) -> list[str]:
    """One section per plot: the embedded PNG, or why it is not drawn (tuned: the objective's name,
    when it is not the validation loss)."""
    from optuna.trial import TrialState

    from ptflow.plots import prepare_matplotlib

    prepare_matplotlib()  # before Optuna's views import matplotlib
    from optuna.visualization import matplotlib as views

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    searched = len({name for trial in finished for name in trial.params})
    labels = {"plot_optimization_history": ("trial", "mean validation loss of the folds" if folds
                                            else tuned or "validation loss (the trial's best epoch)"),
              "plot_intermediate_values": ("folds done", "mean validation loss so far") if folds
              else ("epoch", "validation loss")}
    steps = "Mean validation loss after each fold" if folds else "Validation loss per epoch"
    plots = [("Optimisation history", views.plot_optimization_history, len(finished) >= 1, "needs a finished trial"),
             (f"{steps}, every trial", views.plot_intermediate_values, True, ""),
             # fANOVA on a single trial returns equal shares, and one hyperparameter always gets 1:
             # pictures of nothing
             ("Hyperparameter importance (fANOVA)", views.plot_param_importances, len(finished) >= 2 and searched >= 2,
              f"needs two finished trials and two searched hyperparameters (here: {len(finished)} finished, "
              f"{searched} searched)")]
    sections = []
    for title, plot, drawn, why in plots:
        body = image(_png(plot, study, labels.get(plot.__name__)), title) if drawn else \
            f"<p>Not drawn: {escape(why)}.</p>"
        sections.append(section(title, body))
    return sections


def _png(plot, study, labels: tuple[str, str] | None) -> bytes:
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    from ptflow.plots import to_png

    matplotlib.use("Agg")
    # Optuna's views switch the global style to ggplot: keep that from leaking into later plots.
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib views are marked experimental
        ax = plot(study)
        if labels:  # say what the axes are, in whole trials, epochs or folds (no tick at 1.5)
            ax.set(xlabel=labels[0], ylabel=labels[1])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        elif ax.get_legend() is not None:  # the importance bars: a legend naming "Objective Value" says nothing
            ax.get_legend().remove()
        ax.figure.set_size_inches(8, 4.5)
        return to_png(ax.figure)
