"""`ptflow runs`, `runs show`, `runs compare` and `ptflow report`, on real run folders."""

import base64
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import stop_after_epoch

from ptflow.config import TrainConfig
from ptflow.training import train


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, npz_data) -> Path:
    """Four runs: two finished (lr differs), one interrupted, one whose process died."""
    root = tmp_path_factory.mktemp("history")
    base = {"dataset": f"npz:{npz_data}", "runs_dir": str(root), "n_epochs": 3, "batch_size": 32, "verbose": 0}
    train.train_model(TrainConfig.from_dict({**base, "run_name": "base"}))
    train.train_model(TrainConfig.from_dict({**base, "run_name": "fast", "lr": 0.01}))
    with pytest.raises(KeyboardInterrupt):
        train.train_model(TrainConfig.from_dict({**base, "run_name": "stopped"}), callbacks=[stop_after_epoch(1)])
    shutil.copytree(root / "stopped", root / "dead")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    status = json.loads((root / "dead" / "run.json").read_text())
    status.update(status="running", pid=gone.pid, host=platform.node(), started=status["started"] + 1)
    (root / "dead" / "run.json").write_text(json.dumps(status))
    (root / "not-a-run").mkdir()  # ignored: no run.json, no config.json
    return root


def status(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def columns(line: str) -> list[str]:
    """The cells of a line of ptflow's plain tables: columns are two or more spaces apart."""
    return re.split(r"\s{2,}", line.strip())


def table_rows(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    return {"header": lines[0].split("  "), **{line.split()[0]: line.split() for line in lines[2:]}}


def test_runs_lists_every_run_with_what_differs(cli, runs_dir):
    code, out, err = cli("runs", "--runs_dir", runs_dir)
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header[:4] == ["id", "started", "dataset", "model"] and "lr" in header and header[-1] == "status"
    assert "n_layers" not in header and "run_name" not in header  # the same everywhere, or bookkeeping
    rows = table_rows(out)
    assert set(rows) == {"header", "base", "fast", "stopped", "dead"}
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["base", "fast", "stopped", "dead"]  # by start
    assert rows["base"][-1] == "finished" and rows["stopped"][-1] == "interrupted" and rows["dead"][-1] == "crashed"
    assert f"{status(runs_dir / 'base')['test_acc']:.4f}" in rows["base"]
    assert f"{status(runs_dir / 'fast')['best_valid_loss']:.4f}" in rows["fast"]
    assert "ECE" in header and f"{status(runs_dir / 'base')['test_ece']:.4f}" in rows["base"]  # calibration too
    assert "0.01" in rows["fast"] and "0.001" in rows["base"]


def test_runs_show(cli, runs_dir):
    code, out, err = cli("runs", "show", "base", "--runs_dir", runs_dir)
    assert code == 0, err
    facts = dict(columns(line)[:2] for line in out.split("\n\n")[0].splitlines())
    assert facts["status"] == "finished" and facts["test acc (95% CI)"].startswith(
        f"{status(runs_dir / 'base')['test_acc']:.4f} [")
    epochs = out.split("\nepochs\n")[1].strip().splitlines()
    assert len(epochs) == 2 + 3 and epochs[0].split()[0] == "epoch"
    code, out, _ = cli("runs", "show", runs_dir / "stopped")  # a folder path works too
    assert code == 0 and "interrupted" in out


def test_runs_compare(cli, runs_dir, tmp_path):
    png = tmp_path / "curves.png"
    code, out, err = cli("runs", "compare", "base", "fast", "stopped", "--runs_dir", runs_dir, "-o", png)
    assert code == 0, err
    differences = out.split("config differences\n")[1].split("\n\n")[0].splitlines()
    assert [line.split() for line in differences[2:]] == [["lr", "0.001", "0.01", "0.001"]]
    metrics = {columns(line)[0]: columns(line)[1:] for line in
               out.split("metrics\n")[1].split("\n\n")[0].splitlines()[2:]}
    assert [cell.split()[0] for cell in metrics["test acc (95% CI)"][:2]] == \
        [f"{status(runs_dir / r)['test_acc']:.4f}" for r in ("base", "fast")]
    assert metrics["test acc (95% CI)"][2] == "-"  # the interrupted run was never tested
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_runs_as_json(cli, runs_dir, tmp_path, monkeypatch):
    code, out, err = cli("runs", "--runs_dir", runs_dir, "--json")
    assert code == 0, err
    listed = {run["id"]: run for run in json.loads(out)}
    assert set(listed) == {"base", "fast", "stopped", "dead"}
    base = status(runs_dir / "base")
    assert listed["base"]["test_acc"] == base["test_acc"] and listed["base"]["test_n"] == base["test_n"]
    low, high = listed["base"]["test_acc_ci95"]
    assert low < base["test_acc"] < high or base["test_acc"] in (low, high)
    assert listed["fast"]["config"]["lr"] == 0.01 and listed["dead"]["status"] == "crashed"
    assert listed["stopped"]["test_acc"] is None and listed["stopped"]["test_acc_ci95"] is None

    code, out, err = cli("runs", "show", "base", "--runs_dir", runs_dir, "--json")
    shown = json.loads(out)
    assert code == 0 and len(shown["epochs"]) == 3 and shown["best_valid_loss"] == base["best_valid_loss"]

    monkeypatch.chdir(tmp_path)
    code, out, err = cli("runs", "compare", "base", "fast", "--runs_dir", runs_dir, "--json")
    assert code == 0, err
    compared = json.loads(out)
    assert compared["config_differences"] == {"lr": [0.001, 0.01]}
    assert [run["name"] for run in compared["runs"]] == ["base", "fast"]
    [pair] = compared["significance"]
    assert (pair["a"], pair["b"], pair["n"]) == ("base", "fast", base["test_n"])
    assert pair["both"] + pair["neither"] + pair["only_a"] + pair["only_b"] == pair["n"] and 0 <= pair["p_value"] <= 1
    assert compared["learning_curves"] is None and not list(tmp_path.iterdir())  # no PNG unless -o is given


def test_unknown_or_ambiguous_runs(cli, runs_dir):
    for args in (["runs", "show", "nope"], ["runs", "compare", "base", "nope"], ["report", "nope"]):
        code, _, err = cli(*args, "--runs_dir", runs_dir)
        assert code == 1 and "no run 'nope'" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = cli("runs", "compare", "base", "--runs_dir", runs_dir)
    assert code == 2 and "two or more" in err
    code, _, err = cli("runs", "show", "", "--runs_dir", runs_dir)
    assert code == 1
    code, _, err = cli("runs", "--runs_dir", runs_dir / "absent")
    assert code == 1 and "no runs folder" in err
    code, out, err = cli("runs", "show", "fa", "--runs_dir", runs_dir)  # a unique prefix of an id
    assert code == 0 and "fast" in out


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.tags, self.text = [], [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        self.links += [v for k, v in attrs.items() if k in ("href", "src") and tag != "img"]

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_one_self_contained_html_file(cli, runs_dir, tmp_path):
    out_file = tmp_path / "report.html"
    code, out, err = cli("report", "base", "--runs_dir", runs_dir, "-o", out_file)
    assert code == 0, err
    page = Page()
    page.feed(out_file.read_text())
    assert not page.links and not {"script", "link", "iframe"} & page.tags  # nothing fetched from elsewhere
    assert len(page.images) == 5  # learning curves, reliability, confusion matrix, samples, mistakes
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(page.text)
    for needed in ("Config", "Learning curves", "Test metrics", "Calibration", "Confusion matrix",
                   "Sample predictions", "Most confident mistakes", "top", "middle", "bottom", "precision", "recall",
                   "95% CI", "Wilson score", "macro-F1", "expected calibration error"):
        assert needed in text, needed
    accuracy = json.loads((runs_dir / "base" / "run.json").read_text())["test_acc"]
    assert f"{accuracy:.4f}" in text


def test_report_of_an_unfinished_run_and_the_default_path(cli, runs_dir):
    code, out, err = cli("report", runs_dir / "stopped")
    assert code == 0, err
    html = (runs_dir / "stopped" / "report.html").read_text()
    assert "never tested" in html and "data:image/png;base64," in html  # the curve of its one epoch


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom ptflow.cli import main\n"
            "for args in (['--help'], ['train', '--help'], ['runs', '--help'], ['report', '--help']):\n"
            "    assert main(args) == 0\n"
            "heavy = [m for m in ('torch', 'yaml', 'matplotlib', 'numpy', 'importlib.metadata', 'pathlib', 'json')\n"
            "         if m in sys.modules]  # the last three: 20+ ms that --help never needs\n"
            "print(heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc says which process is a zombie")
def test_a_running_run_whose_process_is_dead_unreaped_or_replaced_shows_as_crashed():
    """A killed launcher's processes are reaped by init, which may take its time: a zombie is dead
    (its lock dropped), and so is the run's pid once a later process reuses it."""
    from ptflow.training import runs

    now = time.time()
    record = {"status": "running", "host": platform.node(), "pid": os.getpid(), "started": now}
    assert runs.status(record) == "running"  # this very process
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        time.sleep(0.01)  # exited, not yet waited for
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert runs.status({**record, "pid": zombie.pid}) == "crashed"
        assert runs.status({**record, "pid": later.pid, "started": now - 60}) == "crashed"  # started after the record
        assert runs.status({**record, "pid": later.pid}) == "running"  # recorded as it started
        resumed = {**record, "pid": later.pid, "started": now - 600, "resumed": [{"at": now - 60}, {"at": now}]}
        assert runs.status(resumed) == "running"  # the last resume recorded it
    finally:
        later.kill()
        later.wait()
        zombie.wait()
