"""What a training checkpoint is only valid with: the architecture, the data and the code.

A checkpoint records its run's identity (the model and its arguments, the data's fingerprint,
ptflow's and torch's versions, a hash of ptflow's own source files and the git commit); a resume
recomputes it and is refused, saying what differs, when the data or the model changed. Changed
code is refused too unless --allow_changed_code says to go on (then with a warning: the numbers
may differ from an uninterrupted run).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

import ptflow
from ptflow import __version__
from ptflow.console import warn
from ptflow.errors import PtflowError
from ptflow.training import runs


def current(model: str, model_args: dict, data_fingerprint: str) -> dict:
    """This run's identity: the architecture, the data and the code, as a checkpoint records them."""
    return {"model": model, "model_args": model_args, "data_fingerprint": data_fingerprint,
            "code": {"ptflow": __version__, "torch": str(torch.__version__), "source": source_fingerprint(),
                     "git_commit": runs.git_commit()}}


def source_fingerprint(root: Path | None = None) -> str:
    """sha256 of ptflow's own source files: catches edits that a git commit (or none) would miss."""
    root = root or Path(ptflow.__file__).parent  # every module of every layer, named by its path in the package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def check(run_dir: Path, saved: dict, now: dict, allow_changed_code: bool) -> None:
    """Refuse, saying what differs, when the data, the model or (unless allowed) the code changed."""
    hard = []
    if saved["data_fingerprint"] != now["data_fingerprint"]:
        hard.append(f"the data changed (fingerprint {saved['data_fingerprint'][:12]} when it started, "
                    f"{now['data_fingerprint'][:12]} now)")
    if (saved["model"], saved["model_args"]) != (now["model"], now["model_args"]):
        hard.append(f"the model changed ({_changed(saved['model_args'], now['model_args']) or saved['model']})")
    code = [f"{name} {saved['code'].get(name)} -> {now['code'].get(name)}" for name in ("ptflow", "torch")
            if saved["code"].get(name) != now["code"].get(name)]
    if saved["code"]["source"] != now["code"]["source"]:
        commits = f", git commit {_short(saved['code'].get('git_commit'))} -> {_short(now['code'].get('git_commit'))}"
        code.append("ptflow's source files changed" + commits)
    if hard or (code and not allow_changed_code):
        hint = "; --allow_changed_code resumes anyway" if code and not hard else ""
        raise PtflowError(f"cannot resume {run_dir.name}: {'; '.join(hard + code)}{hint}")
    if code:
        warn(f"resuming {run_dir.name} with changed code ({'; '.join(code)}): the numbers may differ "
             f"from an uninterrupted run")


def _changed(a: dict, b: dict) -> str:
    return ", ".join(f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def _short(commit: str | None) -> str:
    return commit[:10] if commit else "none"
