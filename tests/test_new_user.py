"""A new user's path: the README's commands as pasted, the hints ptflow prints and what following
them gives, the defaults a user expects, and a first run without warnings on a locked-down machine.

The README's blocks are read from README.md itself (each after an HTML comment naming it), so
the tests break when the README's commands stop working, not when they change.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
from helpers import REPO, assert_one_line_error, find_mnist, make_images

README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_block(name: str) -> str:
    """The fenced block that follows `<!-- name -->` in the README."""
    match = re.search(rf"<!-- {name} -->\s*```\w*\n(.*?)```", README, re.S)
    assert match, f"README.md has no block marked <!-- {name} -->"
    return match.group(1)


def commands(block: str) -> list[list[str]]:
    """The block's shell lines as argument lists (comments dropped), each starting with `ptflow`."""
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [line for line in lines if line]


def ptflow_args(line: list[str]) -> list[str]:
    assert line[0] == "ptflow", line
    return line[1:]


def train_flags(data: Path, runs_dir: Path, *more: str) -> list[str]:
    return ["train", "--dataset", f"npz:{data}", "--runs_dir", str(runs_dir), "--n_epochs", "2",
            "--batch_size", "32", "--verbose", "1", *more]


# --- the README, as pasted ----------------------------------------------------------------------

def test_the_readme_workflow_runs_as_pasted_and_evaluates_the_model_it_trained(cli, idx_dir, tmp_path,
                                                                               monkeypatch):
    """Every line of the workflow block, on a tiny IDX 'mnist'; evaluate judges the model that the
    train line wrote (the reference: the test accuracy train recorded for that run)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PTFLOW_DATA_DIR", str(idx_dir))
    lines = commands(readme_block("workflow"))
    for line in lines:
        code, out, err = cli(*ptflow_args(line))
        assert code == 0, f"{shlex.join(line)}: {err}"
    train = next(line for line in lines if line[1] == "train")
    model_fn = Path(train[train.index("--model_fn") + 1])
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    trained = json.loads((run / "run.json").read_text())
    assert json.loads((run / "config.json").read_text())["model"] == "cnn"  # the preset's model
    evaluated = json.loads((tmp_path / f"{model_fn.stem}-eval" / "evaluation.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(trained["test_acc"], abs=1e-12)
    assert (run / "report.html").is_file()  # `ptflow report` with no RUN: the latest run


def test_the_readme_photo_commands_run_as_pasted(cli, tmp_path, monkeypatch):
    """The photos block on a small generated folder (the same images as a folder and as shards)."""
    pytest.importorskip("torchvision")  # --augment light
    from helpers.photos import write_photos

    monkeypatch.chdir(tmp_path)
    write_photos(tmp_path / "photos", per_class=8)
    for line in commands(readme_block("photos")):
        code, out, err = cli(*ptflow_args(line), *(["--n_epochs", "2"] if line[1] == "train" else []))
        assert code == 0, f"{shlex.join(line)}: {err}"
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    placements = [json.loads((run / "run.json").read_text())["images"]["placement"] for run in runs]
    assert len(runs) == 2 and placements[1].startswith("streamed")


def test_the_readme_python_snippet_runs_as_pasted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_block("python-api"), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    model, result = namespace["model"], namespace["result"]
    x_test, y_test = namespace["x_test"], namespace["y_test"]
    assert model.evaluate()["accuracy"] == pytest.approx(result.metrics["test_acc"], abs=1e-12)
    assert (model.predict(x_test) == model.predict_proba(x_test).argmax(1)).all() and len(y_test) == len(x_test)


def test_the_readme_notebook_command_runs_with_the_test_extras(tmp_path, trained):
    """The command the README gives, with the programs `.[test]` installs (nbclient's
    `jupyter execute`, ipykernel), on a copy of the notebook."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nbformat = pytest.importorskip("nbformat")
    (line,) = commands(readme_block("notebook-command"))
    program = Path(sys.executable).parent / line[0]
    assert program.is_file(), f"{line[0]} is not installed beside {sys.executable}"
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "predict.ipynb", tmp_path / "examples")
    env = {**os.environ, "PTFLOW_MODEL": str(trained["safetensors"]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([str(program), *line[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    output = line[line.index("--output") + 1]
    notebook = nbformat.read(tmp_path / "examples" / f"{output}.ipynb", as_version=4)
    printed = [o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not any(o.output_type == "error" for cell in notebook.cells if cell.cell_type == "code"
                   for o in cell.outputs)
    assert any(text.startswith("Accuracy: ") for text in printed)


# --- hints that a user follows ------------------------------------------------------------------

@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_following_the_resume_hint_writes_the_model_where_the_user_asked(cli, npz_data, tmp_path, monkeypatch):
    """Ctrl-C after epoch 2 of a run started with --model_fn: the printed command, run as it is,
    finishes the run and writes the model file there (a resumed run takes output paths only from
    its command line), with the run folder's weights."""
    from safetensors.torch import load_file

    from ptflow.training import runs

    append = runs.append_metrics

    def ctrl_c_after_epoch_2(run, record):
        append(run, record)
        if record["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as from the terminal: handled at the epoch's end

    model_fn = tmp_path / "out" / "model.safetensors"
    monkeypatch.setattr(runs, "append_metrics", ctrl_c_after_epoch_2)
    code, out, err = cli(*train_flags(npz_data, tmp_path / "runs", "--n_epochs", "4", "--model_fn", model_fn))
    monkeypatch.setattr(runs, "append_metrics", append)
    assert code == 130, err
    assert not model_fn.exists()
    hint = re.search(r"Continue with: (.+)$", out, re.M).group(1)
    code, out, err = cli(*ptflow_args(shlex.split(hint)))
    assert code == 0, err
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "run.json").read_text())["epochs_run"] == 4
    assert model_fn.is_file()
    ours, theirs = load_file(model_fn), load_file(run / "model.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)


def test_train_ends_with_the_next_commands_and_they_use_its_model(cli, npz_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the printed commands are run from where train ran
    model_fn = tmp_path / "mine.safetensors"
    code, out, err = cli(*train_flags(npz_data, tmp_path / "runs", "--model_fn", model_fn, "--run_name", "r"))
    assert code == 0, err
    printed = [shlex.split(line, comments=True) for line in out.split("Next:\n", 1)[1].splitlines()]
    by_command = {line[1]: line for line in printed}
    assert set(by_command) == {"evaluate", "report", "serve"}
    assert by_command["serve"][by_command["serve"].index("--model_fn") + 1] == str(model_fn)
    for name in ("evaluate", "report"):
        code, _, err = cli(*ptflow_args(by_command[name]))
        assert code == 0, err
    assert (tmp_path / "mine-eval" / "evaluation.json").is_file()
    assert (tmp_path / "runs" / "r" / "report.html").is_file()
    code, out, _ = cli(*train_flags(npz_data, tmp_path / "runs", "--verbose", "0"))
    assert code == 0 and "Next:" not in out  # --verbose 0 prints the result alone


# --- defaults: the latest run -------------------------------------------------------------------

def test_model_commands_default_to_the_latest_runs_model(cli, npz_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("first", "second"):
        assert cli(*train_flags(npz_data, "runs", "--run_name", name, "--verbose", "0"))[0] == 0
    latest = Path("runs") / "second" / "model.safetensors"

    code, out, err = cli("evaluate")
    assert code == 0, err
    assert str(latest) in err  # said on stderr: stdout stays the command's output
    assert cli("evaluate", "--model_fn", latest, "--out_dir", "explicit")[0] == 0
    files = (tmp_path / latest.parent / "model-eval", tmp_path / "explicit")
    by_default, explicit = (json.loads((folder / "evaluation.json").read_text()) for folder in files)
    assert by_default["confusion_matrix"] == explicit["confusion_matrix"]

    x, _ = make_images(3)
    np.savez(tmp_path / "three.npz", x=x)
    code, out, err = cli("predict", "three.npz", "--format", "json")
    assert code == 0, err
    assert out == cli("predict", "--model_fn", latest, "three.npz", "--format", "json")[1]

    code, _, err = cli("export", "--format", "torchscript", "-o", "model.pt")
    assert code == 0 and (tmp_path / "model.pt").is_file(), err

    code, out, err = cli("report")
    assert code == 0 and (tmp_path / "runs" / "second" / "report.html").is_file(), err


@pytest.mark.parametrize("command", [["evaluate"], ["predict"], ["export", "--format", "onnx", "-o", "m.onnx"],
                                     ["report"]], ids=lambda c: c[0])
def test_no_model_and_no_run_is_one_line_saying_what_to_do(cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*command)
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert "ptflow train" in err and not any(tmp_path.iterdir())


# --- what the run history and the report show ---------------------------------------------------

def test_runs_shows_how_many_processes_trained_each_run(cli, trained, tmp_path):
    shutil.copytree(trained["run"], tmp_path / "four")
    record = json.loads((tmp_path / "four" / "run.json").read_text())
    (tmp_path / "four" / "run.json").write_text(json.dumps({**record, "world_size": 4, "started": 2e9}))
    shutil.copytree(trained["run"], tmp_path / "one")
    code, out, err = cli("runs", "--runs_dir", tmp_path)
    assert code == 0, err
    header, _, *rows = out.splitlines()
    column = header.split().index("processes")
    assert {row.split()[0]: row.split()[column + 1] for row in rows} == {"one": "1", "four": "4"}  # +1: the time
    code, out, _ = cli("runs", "--runs_dir", tmp_path, "--json")
    assert {run["id"]: run["world_size"] for run in json.loads(out)} == {"one": 1, "four": 4}


def config_table(html: str) -> dict[str, str]:
    section = re.search(r"<h2>Config</h2>(.*?)</table>", html, re.S).group(1)
    return dict(re.findall(r"<tr><td[^>]*>(.*?)</td><td[^>]*>(.*?)</td></tr>", section))


def test_the_reports_config_shows_only_the_flags_that_build_the_runs_model(cli, tmp_path, trained):
    """Reference: the flags each built-in network's builder takes (its module's MODEL.args), which
    must all be train flags; a cnn's report has channels but no n_layers, an mlp's the reverse."""
    from ptflow.config import names
    from ptflow.models import registry

    assert registry.model_flags() <= set(names())
    x, y = make_images(120)
    np.savez(tmp_path / "images.npz", x=x, y=y)
    assert cli(*train_flags(tmp_path / "images.npz", tmp_path / "runs", "--model", "cnn", "--channels", "4",
                            "--run_name", "cnn", "--verbose", "0"))[0] == 0
    for run, model in ((tmp_path / "runs" / "cnn", "cnn"), (trained["run"], "mlp")):
        out = tmp_path / f"{model}.html"
        assert cli("report", run, "-o", out)[0] == 0
        shown = set(config_table(out.read_text()))
        assert registry.train_flags(model) <= shown
        assert not (registry.model_flags() - registry.train_flags(model)) & shown
        assert shown >= {"dataset", "lr", "batch_size", "model_args"}


# --- the served page ----------------------------------------------------------------------------

def test_the_served_page_says_what_to_do_and_links_to_working_docs(trained):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ptflow.serve.app import create_app

    with TestClient(create_app(trained["safetensors"]), base_url="http://localhost") as client:
        page = client.get("/")
        assert page.status_code == 200
        hint = re.search(r'<p id="hint">(.*?)</p>', page.text, re.S).group(1)
        assert "Draw" in hint and "upload" in hint
        (href,) = re.findall(r'<a href="([^"]+)"', hint)
        docs = client.get(urljoin(str(page.url), href))
        assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --- data, warnings, leftovers ------------------------------------------------------------------

@pytest.mark.parametrize("layout", [".", "mnist"], ids=["files", "DIR/mnist"])
def test_the_real_mnist_tests_look_where_ptflow_data_dir_says(idx_dir, tmp_path, monkeypatch, layout):
    root = tmp_path / "data"
    shutil.copytree(idx_dir, root / layout)
    monkeypatch.setenv("PTFLOW_DATA_DIR", str(root))
    assert find_mnist() == root / layout


def test_verbose_2_prints_no_warning(cli, npz_data, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = cli(*train_flags(npz_data, tmp_path, "--verbose", "2", "--n_epochs", "1"))
    assert code == 0, err
    assert "Train Iteration(1/" in out
    assert [str(w.message) for w in caught if "ptflow" in w.filename] == []


def test_an_unwritable_home_draws_without_matplotlib_warnings(tmp_path):
    """HOME is a file (unwritable even for root): matplotlib gets a private folder of ours, kept for
    the next run (its font cache is built once), and says nothing."""
    (tmp_path / "home").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME")}
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    draw = ("from ptflow import plots; plots.learning_curve({'r': [{'epoch': 1, 'train_loss': 1.0, "
            "'valid_loss': 1.5}, {'epoch': 2, 'train_loss': 0.5, 'valid_loss': 0.9}]}, 'curve.png')")
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", draw], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("ptflow-matplotlib")]
    assert folder.stat().st_mode & 0o777 == 0o700 and any(folder.glob("fontlist*.json"))


@pytest.mark.parametrize("flags", [
    ["--study", "never-made"],  # resuming a study that no storage holds
    ["--dataset", "no-such-data", "--param", "lr=loguniform:1e-4:1e-2"],
    ["--model", "no-such-model", "--param", "lr=loguniform:1e-4:1e-2"],
    ["--param", "model=choice:mlp,no-such-model"],
], ids=["no-study", "dataset", "model", "searched-model"])
def test_a_sweep_usage_error_leaves_nothing_behind(cli, tmp_path, flags):
    pytest.importorskip("optuna")
    code, out, err = cli("sweep", "--trials", "1", "--runs_dir", tmp_path / "runs", "--dataset", "digits", *flags)
    assert code == 2, err
    assert_one_line_error(err)
    assert not (tmp_path / "runs").exists()
