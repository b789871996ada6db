"""The pictures: learning curves, sample grids, confusion matrices, reliability diagrams. PNG files,
written atomically.

Each function returns the PNG's bytes and also writes them to `path` unless it is None (the
HTML report embeds the bytes). matplotlib is imported here only (sweep reports draw Optuna's
views after `prepare_matplotlib`), with the Agg backend (no display needed).
"""

from __future__ import annotations

import io
import math
import os
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np

from ptflow.console import terminal_safe
from ptflow.files import atomic_write_bytes


def prepare_matplotlib() -> None:
    """Call before anything imports matplotlib (its import reads MPLCONFIGDIR once).

    matplotlib keeps its font cache in its config folder (~/.config/matplotlib). Where HOME is not
    writable (a container's user, a service account) it warns on every start and rebuilds the cache
    in a new temporary folder each time; a lasting private folder of ours avoids both.
    """
    if os.environ.get("MPLCONFIGDIR") or "matplotlib" in sys.modules:
        return
    if not _writable_folder(_default_config_folder()):
        os.environ["MPLCONFIGDIR"] = _private_temp_folder("ptflow-matplotlib")


def _default_config_folder() -> Path | None:
    """Where matplotlib keeps its config without MPLCONFIGDIR (as its own _get_config_or_cache_dir)."""
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no user entry
        return None
    if sys.platform.startswith(("linux", "freebsd")):
        return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "matplotlib"
    return home / ".matplotlib"


def _writable_folder(path: Path | None) -> bool:
    if path is None:
        return False
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return path.is_dir() and os.access(path, os.W_OK)


def _private_temp_folder(name: str) -> str:
    """A folder in the temporary directory that only this user can write, kept between runs;
    a fresh one if that name is taken by anything else (another user, a link)."""
    uid = getattr(os, "getuid", lambda: None)()
    if uid is not None:
        path = Path(tempfile.gettempdir()) / f"{name}-{uid}"
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077:
                return str(path)
        except OSError:
            pass
    return tempfile.mkdtemp(prefix=f"{name}-")


def _figure(**kwargs):
    """A figure of its own, from matplotlib's object API: drawing never touches pyplot's global
    backend, so a notebook's own inline plots keep working after ptflow draws."""
    prepare_matplotlib()
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def to_png(fig, path: str | Path | None = None) -> bytes:
    """The figure as PNG bytes (closed afterwards), also written to path unless it is None."""
    buffer = io.BytesIO()
    _safe_text(fig)
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    if fig.canvas.manager is not None:  # made through pyplot (Optuna's views): let pyplot forget it
        import matplotlib.pyplot as plt

        plt.close(fig)
    png = buffer.getvalue()
    if path is not None:
        atomic_write_bytes(path, png)
    return png


def _safe_text(fig) -> None:
    """Every text of the figure with its control characters as visible escapes: class and run
    names come from files, and matplotlib would warn about each missing glyph, raw, on stderr."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):  # tick labels are drawn afresh from their formatter: see confusion_matrix
        text.set_text(terminal_safe(text.get_text(), keep="\n"))


def learning_curve(histories: dict[str, list[dict]], path: str | Path | None) -> bytes:
    """Train and validation loss per epoch; several runs overlay in one figure."""
    return to_png(learning_curve_figure(histories), path)


def learning_curve_figure(histories: dict[str, list[dict]]):
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        prefix = f"{name} " if len(histories) > 1 else ""
        line, = ax.plot(epochs, [h["train_loss"] for h in history], label=f"{prefix}train")
        ax.plot(epochs, [h["valid_loss"] for h in history], "--", color=line.get_color(), label=f"{prefix}valid")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(_integer_ticks())  # epochs are whole: no tick at 1.5 on a short run
    ax.set_ylabel("loss (per sample)")
    if all(h["train_loss"] > 0 and h["valid_loss"] > 0 for hs in histories.values() for h in hs):
        ax.set_yscale("log")
        _decimal_log_labels(ax)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _decimal_log_labels(ax) -> None:
    """Log-axis labels as 0.2, 0.5, 1, not 2x10^-1. In-between ticks are labelled as far as there
    is room: all of them over less than a decade, the 2s and 5s over up to three, none beyond."""
    import math

    from matplotlib.ticker import FuncFormatter

    low, high = ax.get_ylim()
    decades = math.log10(high / low)
    shown = "123456789" if decades <= 1 else "25" if decades <= 3 else ""

    def minor(value, _):
        return f"{value:g}" if f"{value:e}"[0] in shown else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def reliability_diagram(bins: list[dict], ece: float, path: str | Path | None) -> bytes:
    """Accuracy against confidence per bin (a calibrated model follows the diagonal), and below it
    how many examples each bin holds: most of a good model's predictions sit in the last bin, so
    the gaps elsewhere rest on few examples."""
    fig = _figure(figsize=(5.5, 6.5))
    ax, counts = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    width = bins[0]["hi"] - bins[0]["lo"]
    filled = [b for b in bins if b["count"]]
    centres = [(b["lo"] + b["hi"]) / 2 for b in filled]
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.bar(centres, [b["accuracy"] for b in filled], width=width * 0.9, color="#4c72b0", label="accuracy")
    ax.vlines(centres, [b["accuracy"] for b in filled], [b["confidence"] for b in filled], color="#c44e52",
              label="gap")
    ax.plot(centres, [b["confidence"] for b in filled], "D", color="#c44e52", markersize=4, label="mean confidence")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="accuracy in bin")
    fig.suptitle(f"Reliability (ECE {ece:.4f})")
    # Above the axes, not in them: bars may reach the top in any bin
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8, frameon=False,
              handlelength=1.5, columnspacing=1.0)
    ax.grid(alpha=0.3)
    counts.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["count"] for b in bins], width=width * 0.9, color="gray")
    counts.set_yscale("symlog", linthresh=1)  # one example and ten thousand on one axis
    counts.yaxis.set_major_locator(_count_ticks())
    counts.yaxis.set_major_formatter(_plain_counts())
    counts.set(xlabel="confidence (top class probability)", ylabel="examples", ylim=(0, None))
    counts.grid(alpha=0.3)
    return to_png(fig, path)


def _plain_counts():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}")


def _count_ticks():
    from matplotlib.ticker import SymmetricalLogLocator

    return SymmetricalLogLocator(base=10, linthresh=1)


def to_display(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N, H, W) or (N, H, W, 3) for imshow; tabular data is not drawable."""
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


def image_grid(images: np.ndarray, titles: list[str], path: str | Path | None, colors: list[str] | None = None,
               columns: int = 10, suptitle: str | None = None) -> bytes:
    n = max(len(images), 1)
    rows = math.ceil(n / columns)
    fig = _figure(figsize=(columns * 1.2, rows * 1.4))
    axes = fig.subplots(rows, columns, squeeze=False)
    shown = to_display(images) if len(images) else []
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(shown[i], cmap="gray" if shown[i].ndim == 2 else None)
            ax.set_title(titles[i], fontsize=7, color=(colors[i] if colors else "black"))
    if suptitle:
        fig.suptitle(suptitle)
    return to_png(fig, path)


PER_CLASS = 10  # examples per row of `ptflow data`'s sample grid


def pick_per_class(y: np.ndarray, classes: list[str], per_class: int = PER_CLASS) -> tuple[np.ndarray, list[str]]:
    """The indices of up to per_class examples of each class (at most 20 classes), and their titles:
    one row per class of `ptflow data`'s sample grid (image_grid)."""
    picked, titles = [], []
    for label, name in list(enumerate(classes))[:20]:
        index = np.flatnonzero(y == label)[:per_class]
        picked += list(index)
        titles += [name] * len(index)
    return np.array(picked, dtype=np.int64), titles


MAX_TICKS = 60  # class names on a confusion matrix's axes: beyond this they overlap into a smudge


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: str | Path | None) -> bytes:
    size = min(max(4.0, 0.5 * len(classes) + 2), 24.0)  # inches: 1,000 classes must not ask for 500
    fig = _figure(figsize=(size, size))
    ax = fig.subplots()
    # Log colours: with a linear scale the diagonal's thousands wash out the handful of mistakes
    # that a confusion matrix is read for. Zero cells stay white.
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    norm = LogNorm(vmin=1, vmax=max(int(matrix.max()), 2))
    cmap = colormaps["Blues"].with_extremes(bad="white")
    ax.imshow(np.ma.masked_equal(matrix, 0), cmap=cmap, norm=norm)
    if len(classes) <= MAX_TICKS:
        names = [terminal_safe(name) for name in classes]  # tick labels escape _safe_text: made safe here
        ax.set_xticks(range(len(classes)), names, rotation=90 if len(classes) > 10 else 0)
        ax.set_yticks(range(len(classes)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count and norm(count) > 0.6 else "black")
    return to_png(fig, path)
