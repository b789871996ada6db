"""Run folders are input: damaged or hostile run files, and names made of terminal codes.

Each damaged folder sits beside a good run. Invariants: `ptflow runs` still lists the good run as
it is and marks the bad one as unreadable, naming the file (and line); `runs show`, `runs compare`
and `report` aimed at the bad one say so in one line with a non-zero exit, never a traceback.
Nothing a run's files or folder name hold reaches the terminal as a control character, and no
name can forge a second "error:" line.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import make_images

from ptflow.config import TrainConfig
from ptflow.console import terminal_safe
from ptflow.training import train

# Every character a terminal acts on, as terminal_safe() must never let through.
CONTROL = {chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))} - {"\n"}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, npz_data) -> Path:
    root = tmp_path_factory.mktemp("good")
    train.train_model(TrainConfig.from_dict({"dataset": f"npz:{npz_data}", "runs_dir": str(root), "run_name": "good",
                                     "n_epochs": 3, "batch_size": 32, "verbose": 0}))
    return root / "good"


def metrics_line(line: int, text: str | bytes):
    """Replace line `line` (1-based) of metrics.jsonl."""
    def damage(run: Path) -> None:
        lines = (run / "metrics.jsonl").read_bytes().split(b"\n")
        lines[line - 1] = text if isinstance(text, bytes) else text.encode()
        (run / "metrics.jsonl").write_bytes(b"\n".join(lines))
    return damage


def json_field(name: str, key: str, value):
    def damage(run: Path) -> None:
        record = json.loads((run / name).read_text())
        record[key] = value
        (run / name).write_text(json.dumps(record))
    return damage


def file_as(name: str, data: bytes):
    def damage(run: Path) -> None:
        (run / name).unlink()
        (run / name).write_bytes(data)
    return damage


def sparse_metrics(run: Path) -> None:  # a 100 MB metrics.jsonl that takes no disk
    with open(run / "metrics.jsonl", "wb") as f:
        f.truncate(100 << 20)


def fifo(name: str):
    def damage(run: Path) -> None:
        (run / name).unlink()
        os.mkfifo(run / name)  # a reader that opened it plainly would wait for a writer forever
    return damage


def link(name: str):
    def damage(run: Path) -> None:
        (run / name).unlink()
        (run / name).symlink_to(run / "config.json")
    return damage


EPOCH = '{"epoch": 2, "train_loss": 1.0, "valid_loss": 1.0, "valid_acc": 0.5'
# name -> (damage, what the one-line error must name; None: the listing does not read that file)
CASES = {
    "metrics array": (metrics_line(2, "[1, 2, 3]"), "metrics.jsonl line 2: a JSON array"),
    "metrics 100 MB": (sparse_metrics, "metrics.jsonl: 104,857,600 bytes"),
    "metrics long line": (metrics_line(1, EPOCH + ', "x": "' + "x" * (1 << 20) + '"}'), "metrics.jsonl line 1: longer"),
    "metrics not UTF-8": (metrics_line(2, EPOCH.encode() + b', "note": "\xff"}'), "metrics.jsonl line 2: not UTF-8"),
    "metrics bare NaN": (metrics_line(1, "NaN"), "metrics.jsonl line 1: a JSON number"),
    "metrics NaN epoch": (metrics_line(2, EPOCH.replace('"epoch": 2', '"epoch": NaN') + "}"), "'epoch'"),
    "metrics deep nesting": (metrics_line(1, "[" * 50_000), "metrics.jsonl line 1:"),
    "metrics nested object": (metrics_line(1, EPOCH + ', "x": ' + '{"a": ' * 40 + "1" + "}" * 41),
                              "metrics.jsonl line 1: nested more than 32"),
    "metrics string loss": (metrics_line(2, EPOCH.replace("1.0,", '"low",', 1) + "}"), "'train_loss'"),
    "metrics no valid_loss": (metrics_line(2, '{"epoch": 2, "train_loss": 1.0, "valid_acc": 0.5}'), "'valid_loss'"),
    "metrics huge int": (metrics_line(2, EPOCH.replace("2", "9" * 5000, 1) + "}"), "metrics.jsonl line 2: not JSON"),
    "metrics infinite seconds": (metrics_line(2, EPOCH + ', "seconds": Infinity}'), "'seconds'"),
    "metrics link": (link("metrics.jsonl"), "metrics.jsonl: a symbolic link"),
    "metrics fifo": (fifo("metrics.jsonl"), "metrics.jsonl: not a regular file"),
    "run.json array": (file_as("run.json", b"[]"), "run.json: a JSON array"),
    "run.json string time": (json_field("run.json", "started", "yesterday"), "run.json: 'started'"),
    "run.json huge time": (json_field("run.json", "started", 1e300), "run.json: 'started'"),
    "run.json accuracy text": (json_field("run.json", "test_acc", "high"), "run.json: 'test_acc'"),
    "run.json cv": (json_field("run.json", "cv", {"folds": 2}), "run.json: 'cv'"),
    "run.json fifo": (fifo("run.json"), "run.json: not a regular file"),
    "config.json number dataset": (json_field("config.json", "dataset", 5), "config.json: 'dataset'"),
    "config.json truncated": (file_as("config.json", b'{"dataset": "npz:x.npz", "mo'), "config.json: not JSON"),
    "env.json command": (json_field("env.json", "command", [1, 2]), None),
    "env.json not UTF-8": (file_as("env.json", b'{"git_commit": "\xfe"}'), None),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request, good_run, tmp_path) -> tuple[Path, str | None]:
    root = tmp_path / "runs"
    shutil.copytree(good_run, root / "good")
    shutil.copytree(good_run, root / "bad")
    damage, named = CASES[request.param]
    damage(root / "bad")
    return root, named


def one_error_line(code: int, err: str) -> str:
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_listing_marks_the_bad_run_and_lists_the_others(cli, case):
    root, named = case
    code, out, err = cli("runs", "--runs_dir", root)
    assert code == 0 and not err, err
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(rows) == {"good", "bad"}
    assert rows["good"].endswith("finished")
    if named is not None:  # the listing reads run.json, config.json and metrics.jsonl
        status = rows["bad"].split("unreadable: ", 1)[1]
        assert named.split(":")[0] in status and named.split(": ", 1)[-1] in status
    code, out, err = cli("runs", "--runs_dir", root, "--json")
    listed = {run["id"]: run for run in json.loads(out)}
    assert code == 0 and listed["good"]["status"] == "finished"
    assert (listed["bad"]["status"] == "unreadable") == (named is not None)


def test_commands_aimed_at_the_bad_run_give_one_line(cli, case, tmp_path):
    root, named = case
    commands = [["runs", "show", "bad"], ["runs", "show", "bad", "--json"], ["report", "bad"]]
    if named is not None:  # compare shows no env.json
        commands.append(["runs", "compare", "good", "bad", "-o", tmp_path / "c.png"])
    for args in commands:
        code, out, err = cli(*args, "--runs_dir", root)
        line = one_error_line(code, err)
        assert line.startswith(f"ptflow {args[0]}: error: {root / 'bad'}: ")
        assert (named or "env.json").split(":")[0] in line
    assert not (tmp_path / "c.png").exists() and not (root / "bad" / "report.html").exists()


def test_a_torn_last_line_or_a_nan_loss_is_no_damage(cli, good_run, tmp_path):
    """A crash during an append leaves a torn last line; a diverged epoch a NaN loss: both are runs."""
    root = tmp_path / "runs"
    shutil.copytree(good_run, root / "torn")
    metrics = root / "torn" / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:-20])
    shutil.copytree(good_run, root / "nan")
    metrics_line(3, EPOCH.replace('"epoch": 2', '"epoch": 3').replace('"valid_loss": 1.0', '"valid_loss": NaN')
                 + "}")(root / "nan")
    code, out, err = cli("runs", "show", "torn", "--runs_dir", root, "--json")
    assert code == 0 and [e["epoch"] for e in json.loads(out)["epochs"]] == [1, 2]
    code, out, err = cli("runs", "show", "nan", "--runs_dir", root)
    assert code == 0 and "nan" in out.split("\nepochs\n")[1].splitlines()[-1]
    code, out, err = cli("runs", "--runs_dir", root)
    assert code == 0 and "unreadable" not in out


def zero_d_predictions(run: Path) -> None:
    np.savez(run / "predictions.npz", **{k: np.array(1) for k in ("y_true", "y_pred", "p_pred")},
             fingerprint=np.array("f"), data_fingerprint=np.array(""))


def bomb_predictions(run: Path) -> None:
    """An entry declaring 2 GiB in a hundred bytes of deflate (more than deflate can expand to)."""
    with zipfile.ZipFile(run / "predictions.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("y_true.npy", b"\0" * 100_000)
    data = bytearray((run / "predictions.npz").read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # the uncompressed size, in both headers
        at = data.index(header) + (22 if header == b"PK\x03\x04" else 24)
        data[at:at + 4] = (2 << 30).to_bytes(4, "little")
    (run / "predictions.npz").write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [zero_d_predictions, bomb_predictions, file_as("predictions.npz", b"[]")])
def test_compare_refuses_damaged_predictions_in_one_line(cli, good_run, tmp_path, damage):
    root = tmp_path / "runs"
    shutil.copytree(good_run, root / "good")
    shutil.copytree(good_run, root / "bad")
    damage(root / "bad")
    code, out, err = cli("runs", "compare", "good", "bad", "--runs_dir", root, "--json")
    line = one_error_line(code, err)
    assert f"{root / 'bad' / 'predictions.npz'}: " in line


HOSTILE = "evil\x1b]0;owned\x07\x1b[2J\x9b31m[red]x[bold]\u202e\udcff"


@pytest.fixture
def hostile(good_run, tmp_path) -> Path:
    """A run whose folder name, config values and environment are made of terminal codes and markup."""
    root = tmp_path / "runs"
    shutil.copytree(good_run, root / "good")
    run = root / HOSTILE.replace("\udcff", "")  # the folder name: no surrogates in os calls from str
    shutil.copytree(good_run, run)
    (run / "model.safetensors").unlink()  # the report then skips the test split: fast
    config = json.loads((run / "config.json").read_text())
    config.update(model=HOSTILE, lr=0.5, note="<script>alert(1)</script>" + HOSTILE)
    (run / "config.json").write_text(json.dumps(config))
    json_field("env.json", "command", ["ptflow", HOSTILE])(run)
    return run


@pytest.mark.filterwarnings("error:Glyph:UserWarning")  # matplotlib would print the raw code
def test_terminal_codes_in_a_run_never_reach_the_terminal(cli, hostile, tmp_path):
    root, name = hostile.parent, hostile.name
    for args in (["runs"], ["runs", "--json"], ["runs", "show", name], ["runs", "show", name, "--json"],
                 ["runs", "compare", "good", name, "-o", tmp_path / "c.png"], ["report", name]):
        code, out, err = cli(*args, "--runs_dir", root)
        assert code == 0, err
        assert not CONTROL & set(out + err) and "\u202e" not in out + err, args
    code, out, _ = cli("runs", "show", name, "--runs_dir", root)
    assert terminal_safe(HOSTILE) in out and "[red]x[bold]" in out  # shown, escaped, markup as text


def test_the_report_escapes_a_runs_values_as_html(cli, hostile):
    code, _, err = cli("report", hostile)
    assert code == 0, err
    page = (hostile / "report.html").read_bytes().decode("utf-8")  # valid UTF-8, surrogates and all
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "[red]x[bold]" in page and "\\xff" in page  # the surrogate of the config value, as an escape


def test_resume_names_a_runs_output_path_without_its_terminal_codes(cli, good_run, tmp_path):
    run = tmp_path / "runs" / "good"
    shutil.copytree(good_run, run)
    json_field("config.json", "model_fn", "m\x1b[2J\x9b.safetensors")(run)
    code, _, err = cli("train", "--resume", run)  # warns of the path it ignores, then: already finished
    assert code == 2 and "--model_fn m\\x1b[2J\\x9b.safetensors" in err and not CONTROL & set(err), err


def test_a_file_name_with_a_newline_forges_no_error_line(cli, good_run, tmp_path):
    forged = "x\nptflow runs: error: forged\r\x1b[1A"
    run = tmp_path / forged
    shutil.copytree(good_run, run)
    metrics_line(1, "[]")(run)
    for args in (["runs", "show", run], ["report", run], ["runs", "show", tmp_path / "nope\nerror: forged"]):
        code, out, err = cli(*args)
        line = one_error_line(code, err)  # the forged text shown, escaped, inside the one line
        assert "\\nptflow runs: error: forged" in line or "\\nerror: forged" in line
        assert not CONTROL & set(err)


@pytest.mark.filterwarnings("error:Glyph:UserWarning")  # matplotlib would print the raw code
def test_class_names_made_of_terminal_codes_are_printed_escaped(cli, tmp_path):
    """Class names travel in the model file of a run: evaluate, predict, show and report print them."""
    x, y = make_images(150)
    data = tmp_path / "evil.npz"
    np.savez(data, x=x, y=y, classes=np.array(["top\x1b[2J", "mid\x9b31m", "bot\u202e[red]"]))
    code, _, err = cli("train", "--dataset", f"npz:{data}", "--runs_dir", tmp_path / "runs", "--run_name", "r",
                       "--n_epochs", "1", "--verbose", "0")
    assert code == 0, err
    model = tmp_path / "runs" / "r" / "model.safetensors"
    np.savez(tmp_path / "x.npz", x=x[:3])
    for args in (["evaluate", "--model_fn", model, "--out_dir", tmp_path / "eval"],
                 ["predict", "--model_fn", model, tmp_path / "x.npz"],
                 ["predict", "--model_fn", model, tmp_path / "x.npz", "--format", "csv"],
                 ["report", tmp_path / "runs" / "r"]):
        code, out, err = cli(*args)
        assert code == 0 and not CONTROL & set(out + err) and "\u202e" not in out + err, (args, err)
        assert "top\\x1b[2J" in out or args[0] == "report"
    assert "<td>top\x1b[2J</td>" in (tmp_path / "runs" / "r" / "report.html").read_text()  # a page is no terminal


def test_a_non_utf8_folder_name_is_listed(cli, good_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(good_run, os.fsdecode(os.fsencode(root) + b"/caf\xe9"))
    code, out, err = cli("runs", "--runs_dir", root)
    assert code == 0 and "caf\\xe9" in out and "finished" in out, err


def test_terminal_safe_escapes_every_control_character_and_keeps_text():
    assert terminal_safe("naïve ✓ 数据 [red]") == "naïve ✓ 数据 [red]"
    assert terminal_safe("\x1b[31m\n\t\x7f\x9b\u202e\ud800\udcff") == "\\x1b[31m\\n\\t\\x7f\\x9b\\u202e\\ud800\\xff"
    assert terminal_safe("a\nb", keep="\n") == "a\nb"
    every = "".join(map(chr, range(0x10000)))  # the planes above hold no control character
    assert not CONTROL & set(terminal_safe(every)) and "\n" not in terminal_safe(every)
