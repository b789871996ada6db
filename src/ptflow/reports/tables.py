"""Plain text for people and JSON for scripts: aligned tables, the cells in them, --json documents.

Generic: nothing here knows what a run is (history.py and report.py fill the tables). Every
cell is made terminal_safe, since what fills the tables (run names, config values, class names)
comes from files.
"""

from __future__ import annotations

import json
import math
import time

from ptflow.console import info, terminal_safe


def format_table(headers: list[str], rows: list[list[str]], header: bool = True) -> str:
    """Plain aligned columns (pipes and files stay readable); numbers right-aligned under a header,
    everything left-aligned in a headerless key-value list. Cells are made terminal_safe: run
    names, config values and class names come from files."""
    cells = [[terminal_safe(c) for c in row] for row in ([headers] if header else []) + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if header and is_number(c.replace(",", "")) else c.ljust(w) for c, w in zip(row, widths)]
        lines.append("  ".join(parts).rstrip())
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_value(value) -> str:
    """A config value as given on the command line: lists comma-separated, None as "-"."""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def format_number(value) -> str:
    """Four decimals; four significant digits below 0.001 (a learning rate, a tiny loss)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def format_time(timestamp) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "?"


def format_duration(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def print_json(value) -> None:
    """One JSON document on stdout (--json): numbers unrounded, non-finite ones as null."""
    info(json.dumps(_finite(value), indent=2, allow_nan=False, default=str))


def _finite(value):
    """NaN and infinity (a diverged run's loss) as null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
