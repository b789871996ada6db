"""Output paths: ptflow writes regular files only.

A target that exists must be a regular file, which is then replaced whole; a folder, a symbolic
link, a FIFO, a socket or a device is refused in one line, before any work, and left as it was
(as root, `ptflow export -o /dev/null` once replaced the device with a file). The tests never
point a writer that could rename at a real device: /dev/null is checked through the check itself,
and through a writer whose temporary file and rename are disabled.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from ptflow.errors import PtflowError


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_folder(path: Path) -> Path:
    path.mkdir()
    return path


def make_socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # the file stays after the socket is closed
    server.close()
    return path


def make_link(path: Path) -> Path:
    victim = path.with_name(path.name + ".victim")
    victim.write_bytes(b"precious")
    path.symlink_to(victim)
    return path


TARGETS = {"fifo": make_fifo, "folder": make_folder, "socket": make_socket, "link": make_link}


def kind(path: Path) -> tuple:
    """What is at path, to compare before and after (a link's target's bytes included)."""
    mode = os.lstat(path).st_mode
    content = os.readlink(path) + Path(path).read_text() if stat.S_ISLNK(mode) else None
    return stat.S_IFMT(mode), content


@pytest.fixture(params=sorted(TARGETS))
def target(request, tmp_path):
    """A path in an otherwise empty folder, holding something that is not a regular file."""
    folder = tmp_path / "targets"
    folder.mkdir()
    return TARGETS[request.param](folder / "out")


def left_alone(target: Path) -> list[str]:
    """The target's folder, apart from the target (and a link's victim): nothing written there."""
    return sorted(p.name for p in target.parent.iterdir() if p.name not in (target.name, target.name + ".victim"))


# --- the check itself ------------------------------------------------------------------------------

def test_the_check_refuses_every_kind_of_file_but_a_regular_one(tmp_path, target):
    from ptflow.files import target_problem

    assert target_problem(target)
    assert target_problem(tmp_path / "absent") is None
    (tmp_path / "file").write_text("x")
    assert target_problem(tmp_path / "file") is None


def test_devices_are_refused_without_ever_being_written():
    from ptflow.cli.common import check_output
    from ptflow.errors import UsageError
    from ptflow.files import target_problem

    assert "character device" in target_problem("/dev/null")
    with pytest.raises(UsageError, match="--out /dev/null: it is a character device"):
        check_output("/dev/null", "--out")


def test_an_atomic_write_to_a_device_is_refused_before_its_temporary_file(monkeypatch):
    """The writer itself, on /dev/null: making the temporary file and renaming it are disabled, so
    that even a broken check could not replace the device."""
    import tempfile

    from ptflow import files

    def never(*args, **kwargs):
        raise AssertionError("a write to a device got as far as its temporary file or its rename")

    monkeypatch.setattr(tempfile, "mkstemp", never)
    monkeypatch.setattr(os, "replace", never)
    with pytest.raises(PtflowError, match="cannot write /dev/null: it is a character device"):
        files.atomic_write_bytes("/dev/null", b"model")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


# --- every writer, as a function -------------------------------------------------------------------

def test_atomic_writes_refuse_the_target_and_leave_it_as_it_was(target):
    from ptflow.files import atomic_write_text, write_json

    before = kind(target)
    for write in (lambda: atomic_write_text(target, "text"), lambda: write_json(target, {})):
        with pytest.raises(PtflowError, match=f"cannot write {target}: "):
            write()
    assert kind(target) == before and left_alone(target) == []


def test_a_fifo_made_while_a_file_is_written_is_refused_at_the_rename(tmp_path):
    from ptflow.files import atomic_write

    path = tmp_path / "model.safetensors"

    def write(tmp):
        Path(tmp).write_bytes(b"weights")
        os.mkfifo(path)  # something appears where the file goes, after the first check

    with pytest.raises(PtflowError, match="FIFO"):
        atomic_write(path, write)
    assert stat.S_ISFIFO(os.lstat(path).st_mode) and left_alone(path) == []


def test_appends_and_rewrites_in_place_refuse_the_target_without_blocking(target):
    """A FIFO opened for writing blocks until something reads it: run files are never opened so."""
    from ptflow.files import append_line, overwrite_in_place

    before = kind(target)
    with pytest.raises(PtflowError, match=f"cannot write {target}: "):
        append_line(target, "{}")
    with pytest.raises(OSError):
        overwrite_in_place(target, "{}")
    assert kind(target) == before


def test_sweep_storage_on_a_fifo_is_refused(tmp_path):
    from ptflow.sweep.study import open_storage

    fifo = make_fifo(tmp_path / "sweeps.db")
    with pytest.raises(PtflowError, match="FIFO"):
        open_storage(f"sqlite:///{fifo}")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# --- every writer, through the command line --------------------------------------------------------

def one_line_error(code: int, err: str, command: str) -> None:
    assert code != 0 and err.startswith(f"ptflow {command}: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["export", "data", "report", "runs compare", "train --model_fn", "sweep"])
def test_every_command_refuses_an_output_that_is_not_a_regular_file(command, target, cli, trained, npz_data,
                                                                    tmp_path):
    runs_dir = tmp_path / "runs"
    args = {
        "export": ["export", "--model_fn", trained["pth"], "--format", "onnx", "-o", target],
        "data": ["data", f"npz:{npz_data}", "--out", target],
        "report": ["report", trained["run"], "-o", target, "--device", "cpu"],
        "runs compare": ["runs", "compare", trained["run"], trained["run"], "-o", target],
        "train --model_fn": ["train", "--dataset", f"npz:{npz_data}", "--n_epochs", "1", "--runs_dir", runs_dir,
                             "--model_fn", target],
        "sweep": ["sweep", "--dataset", f"npz:{npz_data}", "--n_epochs", "1", "--trials", "1",
                  "--param", "lr=float:0.001:0.01", "--runs_dir", runs_dir, "--storage", f"sqlite:///{target}"],
    }[command]
    before = kind(target)
    code, out, err = cli(*args)
    one_line_error(code, err, command.split()[0])
    assert str(target) in err and out == ""
    assert kind(target) == before and left_alone(target) == [] and not runs_dir.exists()


def test_the_default_sweep_database_and_mlflow_store_are_checked_before_any_trial(cli, npz_data, tmp_path):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    make_fifo(runs_dir / "sweeps.db")
    code, _, err = cli("sweep", "--dataset", f"npz:{npz_data}", "--n_epochs", "1", "--trials", "1",
                       "--param", "lr=float:0.001:0.01", "--runs_dir", runs_dir)
    one_line_error(code, err, "sweep")
    assert "FIFO" in err
    make_fifo(runs_dir / "mlflow.db")
    code, _, err = cli("train", "--dataset", f"npz:{npz_data}", "--n_epochs", "1", "--runs_dir", runs_dir,
                       "--log", "mlflow")
    one_line_error(code, err, "train")
    assert "the MLflow store" in err and "FIFO" in err
    assert sorted(p.name for p in runs_dir.iterdir()) == ["mlflow.db", "sweeps.db"]


def test_evaluate_refuses_a_fifo_among_its_outputs_before_any_work(cli, trained, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    make_fifo(out / "reliability.png")
    code, stdout, err = cli("evaluate", "--model_fn", trained["pth"], "--out_dir", out, "--device", "cpu")
    one_line_error(code, err, "evaluate")
    assert "reliability.png" in err and "FIFO" in err and stdout == ""
    assert [p.name for p in out.iterdir()] == ["reliability.png"]  # nothing else written first


def test_a_run_folder_name_held_by_a_fifo_is_refused(cli, npz_data, tmp_path):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    make_fifo(runs_dir / "taken")
    code, _, err = cli("train", "--dataset", f"npz:{npz_data}", "--n_epochs", "1", "--runs_dir", runs_dir,
                       "--run_name", "taken")
    one_line_error(code, err, "train")
    assert stat.S_ISFIFO(os.lstat(runs_dir / "taken").st_mode)


@pytest.mark.parametrize("make", [make_fifo, make_socket])
def test_a_run_folder_with_a_fifo_or_socket_in_it_is_not_resumed(make, cli, trained, tmp_path):
    run = tmp_path / "copied"
    shutil.copytree(trained["run"], run)
    (run / "metrics.jsonl").unlink()
    make(run / "metrics.jsonl")
    code, _, err = cli("train", "--resume", run)
    one_line_error(code, err, "train")
    assert "metrics.jsonl is not a regular file" in err
    mode = os.lstat(run / "metrics.jsonl").st_mode
    assert stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
