"""The environment is not an input of any command but a training that torchrun started.

A Kubernetes PyTorchJob pod or a SLURM wrapper leaves RANK, WORLD_SIZE and LOCAL_RANK in the
environment of every command run there. Each command must print and write exactly what it does
without them; `ptflow train` not started by torchrun trains alone (and says once that it ignored
them). Under torchrun (TORCHELASTIC_RUN_ID set) malformed values are one-line errors, written
before anything else.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                  "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS")

# What schedulers set, and what a mistaken wrapper might.
HOSTILE = [
    {"RANK": "1"},
    {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
     "MASTER_PORT": "1"},
    {"RANK": "abc", "WORLD_SIZE": "0", "LOCAL_RANK": "-1"},
    {"RANK": "3", "WORLD_SIZE": "2"},
]


@pytest.fixture
def environment(monkeypatch):
    """Set one environment (after clearing every rank variable the machine running the tests has)."""

    def _set(values: dict) -> None:
        for name in RANK_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return _set


def commands(trained, npz_data):
    """Each command that is not a training (and one that is), writing under OUT."""
    pth, run = trained["pth"], trained["run"]
    return {
        "evaluate": ["evaluate", "--model_fn", pth, "--out_dir", "OUT/eval", "--device", "cpu"],
        "export": ["export", "--model_fn", pth, "--format", "onnx", "-o", "OUT/model.onnx"],
        "data": ["data", f"npz:{npz_data}", "--out", "OUT/samples.png"],
        "report": ["report", run, "-o", "OUT/report.html", "--device", "cpu"],
        "runs": ["runs", "--runs_dir", run.parent],
        "runs show": ["runs", "show", run],
        "runs compare": ["runs", "compare", run, run, "-o", "OUT/compare.png"],
        "predict": ["predict", "--model_fn", pth, "--format", "json", "--device", "cpu"],
        "train": ["train", "--dataset", f"npz:{npz_data}", "--n_epochs", "1", "--batch_size", "64", "--device", "cpu",
                  "--runs_dir", "OUT/runs", "--run_name", "one", "--model_fn", "OUT/model.safetensors"],
    }


def in_folder(args: list, out: Path) -> list[str]:
    return [str(a).replace("OUT", str(out)) if str(a).startswith("OUT") else str(a) for a in args]


def masked(text: str, out: Path) -> str:
    """Output with the output folder and every number (timings, speeds) blanked."""
    return re.sub(r"\d[\d,.]*", "0", text.replace(str(out), "OUT"))


def written(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []


@pytest.mark.parametrize("name", ["evaluate", "export", "data", "report", "runs", "runs show", "runs compare",
                                  "predict", "train"])
def test_every_command_does_under_rank_variables_what_it_does_without_them(name, cli, environment, tmp_path,
                                                                           trained, npz_data):
    args = commands(trained, npz_data)[name]
    environment({})
    reference = tmp_path / "reference"
    code, out, err = cli(*in_folder(args, reference))
    assert code == 0, err
    assert out.strip() or written(reference)
    for i, values in enumerate(HOSTILE):
        environment(values)
        folder = tmp_path / f"hostile{i}"
        got = cli(*in_folder(args, folder))
        assert got[0] == 0, (values, got[2])
        assert masked(got[1], folder) == masked(out, reference), values
        assert written(folder) == written(reference), values
        extra = masked(got[2], folder).replace(masked(err, reference), "", 1).strip().splitlines()
        if name == "train":  # told, once, that the variables meant nothing here
            assert len(extra) == 1 and "in the environment ignored: torchrun did not start this process" in extra[0]
        else:
            assert extra == [], values


@pytest.mark.parametrize("values, message", [
    ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc' in the environment (torchrun started this process) must be a "
                                         "whole number >= 0"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE='0' in the environment"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "-1"}, "LOCAL_RANK='-1' in the environment"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 in the environment must be below WORLD_SIZE=2"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}, "do not fit WORLD_SIZE=2"),
    ({"RANK": "0", "WORLD_SIZE": "1", "TORCHELASTIC_RESTART_COUNT": "1e3"}, "TORCHELASTIC_RESTART_COUNT='1e3'"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "x"}, "could not join"),
    ({"RANK": "1", "WORLD_SIZE": "2"}, "process 1: WORLD_SIZE is 2 but MASTER_ADDR is not set"),
])
def test_a_torchrun_training_with_malformed_rank_variables_is_a_one_line_error(values, message, cli, environment,
                                                                                tmp_path, npz_data):
    environment({"TORCHELASTIC_RUN_ID": "job", **values})
    code, out, err = cli("train", "--dataset", f"npz:{npz_data}", "--n_epochs", "1", "--device", "cpu",
                         "--runs_dir", tmp_path / "runs", "--run_name", "x")
    assert code != 0 and message in err, err
    assert err.startswith("ptflow train: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not list(tmp_path.iterdir())
    # The process is a follower only while in its job: the next command prints and writes again.
    environment({})
    code, out, _ = cli("data", f"npz:{npz_data}", "--out", tmp_path / "after.png")
    assert code == 0 and out.strip() and (tmp_path / "after.png").is_file()


@pytest.mark.parametrize("flags", [(), ("--workers", "2")])
def test_serve_says_which_port_it_took_whatever_the_environment(flags, trained):
    import os
    import subprocess
    import sys
    import threading
    import time

    import httpx

    hostile = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    command = [sys.executable, "-m", "ptflow", "serve", "--model_fn", str(trained["pth"]), "--port", "0", *flags]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=hostile)
    silent = threading.Timer(90, server.terminate)  # a server that never says its port must not hang the test
    silent.start()
    try:
        said = next((line for line in server.stdout if "Serving" in line), "")
        port = re.search(r"http://127\.0\.0\.1:(\d+)/", said)
        assert port and int(port.group(1)) > 0, said
        deadline = time.monotonic() + 90  # workers import torch before they answer, on a busy machine
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port.group(1)}/readyz", timeout=60).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the port it named never answered"
            time.sleep(0.2)
    finally:
        silent.cancel()
        server.terminate()
        server.wait(timeout=30)


def test_only_the_training_entry_reads_the_rank_variables():
    """The design that keeps the examples above true: files.py, console.py and every other module
    never look at these variables; only a `ptflow train` started by torchrun does."""
    import ptflow

    root = Path(ptflow.__file__).parent
    readers = {str(p.relative_to(root)) for p in root.rglob("*.py")
               if re.search(r"""["'](RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE)["']""", p.read_text())}
    assert readers == {"training/distributed.py", "cli/train.py"}
