"""Labels and classes from every source: what labels become which classes, and what is refused.

The rule (data/labels.py): the classes are the distinct labels, sorted, named by their values
unless class names are given; numeric text is numbers; negative, fractional, NaN and infinite
labels, one class, and empty or duplicate names are one-line errors before training; hidden and
empty folders are no classes; names with bytes that are not UTF-8 are printable everywhere.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from ptflow.data.sources import load_raw
from ptflow.errors import PtflowError


def features(y, seed: int = 0) -> np.ndarray:
    """Learnable (N, 4) features for labels y, whatever their values: the class's rank moves them."""
    rank = np.unique(np.asarray(y), return_inverse=True)[1].reshape(-1)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((len(rank), 4)) + rank[:, None] * 3).astype(np.float32)


def npz(tmp_path, y, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, x=features(y), y=np.asarray(y), **arrays)
    return path


def one_line_error(code: int, err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]


def train(cli, tmp_path, dataset: str, *flags: str):
    return cli("train", "--dataset", dataset, "--n_epochs", "1", "--batch_size", "16", "--runs_dir",
               tmp_path / "runs", "--run_name", "r", "--verbose", "0", *flags)


# --- labels that are not 0..K-1 ------------------------------------------------------------------

def test_labels_3_7_42_train_three_classes_named_by_value(tmp_path, cli):
    from ptflow.models.files import load_model

    y = np.tile([3, 7, 42], 30)
    path = npz(tmp_path, y)
    code, out, err = train(cli, tmp_path, f"npz:{path}")
    assert code == 0, err
    assert out.count("are not 0..2") == 1  # said once
    model_fn = tmp_path / "runs" / "r" / "model.safetensors"
    loaded = load_model(model_fn)
    assert loaded.classes == ["3", "7", "42"] and loaded.meta["model_args"]["output_size"] == 3

    code, out, err = cli("evaluate", "--model_fn", model_fn, "--out_dir", tmp_path / "eval")
    assert code == 0, err
    assert all(name in out for name in ("42", "7", "3"))
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert len(report["confusion_matrix"]) == 3 and sum(report["support"]) > 0

    np.savez(tmp_path / "rows.npz", x=features(y)[:6])
    code, out, err = cli("predict", "--model_fn", model_fn, "--format", "json", tmp_path / "rows.npz")
    assert code == 0, err
    rows = json.loads(out)
    assert {r["class"] for r in rows} <= {"3", "7", "42"}
    assert all(list(r["probabilities"]) == ["3", "7", "42"] for r in rows)


def test_labels_0_to_k_minus_1_keep_their_values_silently(tmp_path, capsys):
    raw = load_raw(f"npz:{npz(tmp_path, [2, 0, 1, 1])}")
    assert raw.classes == ["0", "1", "2"] and raw.y.tolist() == [2, 0, 1, 1]
    assert capsys.readouterr().out == ""


def test_uint64_labels_above_2_63_are_classes(tmp_path):
    y = np.array([2**64 - 1, 1, 2**63 + 5, 1], dtype=np.uint64)
    raw = load_raw(f"npz:{npz(tmp_path, y)}")
    assert raw.classes == ["1", str(2**63 + 5), str(2**64 - 1)]
    assert raw.y.tolist() == [2, 0, 1, 0]


def test_a_huge_label_does_not_make_a_huge_model_or_table(tmp_path, cli):
    y = np.tile([0, 20_000_000], 20)
    code, out, err = cli("data", f"npz:{npz(tmp_path, y)}")
    assert code == 0, err
    assert "classes      2" in out and len(out.splitlines()) < 20


def test_data_summarises_many_classes(tmp_path, cli):
    y = np.repeat(np.arange(500), 3)
    code, out, err = cli("data", f"npz:{npz(tmp_path, y)}")
    assert code == 0, err
    assert "classes      500" in out and "480 more" in out
    assert len(out.splitlines()) < 40


def test_labels_of_the_own_test_split_count_too(tmp_path):
    path = tmp_path / "d.npz"
    y, y_test = np.array([5, 9] * 5), np.array([9, 11, 5])
    np.savez(path, x=features(y), y=y, x_test=features(y_test), y_test=y_test)
    raw = load_raw(f"npz:{path}")
    assert raw.classes == ["5", "9", "11"] and raw.y_test.tolist() == [1, 2, 0]


@pytest.mark.parametrize("y, classes", [
    (np.array([0.0, 1.0, 2.0, 1.0]), ["0", "1", "2"]),  # whole floats, as pandas writes ints with NaNs
    (np.array([True, False, True]), ["False", "True"]),
    (np.array(["dog", "cat", "dog"]), ["cat", "dog"]),
    (np.array([b"caf\xe9", b"tea"]), ["caf\\xe9", "tea"]),  # undecodable bytes shown, not lost
    (np.array(["1", "1.0", "01", "2"]), ["1", "2"]),
])
def test_label_types_that_are_classes(tmp_path, y, classes):
    assert load_raw(f"npz:{npz(tmp_path, y)}").classes == classes


@pytest.mark.parametrize("y, words", [
    (np.array([-1, 1, 1]), "negative"),
    (np.array([0, 0.5, 1]), "not a whole number"),
    (np.array([0, np.nan, 1]), "nan"),
    (np.array([0, np.inf, 1]), "inf"),
    (np.array([4, 4, 4]), "at least two classes"),
    (np.array([1j, 2j]), "whole numbers or text"),
    (np.array([1e30, 1]), "too large"),
])
def test_labels_that_are_no_classes_are_one_line_errors(tmp_path, cli, y, words):
    code, _, err = train(cli, tmp_path, f"npz:{npz(tmp_path, y)}")
    one_line_error(code, err, words)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made


@pytest.mark.parametrize("names, y, words", [
    (np.array(["cat", "cat"]), [0, 1, 0, 1], "appears twice"),
    (np.array(["cat", ""]), [0, 1, 0, 1], "empty"),
    (np.array(["cat"]), [0, 0, 0, 0], "at least two"),
    (np.array(["a", "b"]), [0, 0, 0, 0], "at least two classes"),
    (np.array(["a", "b"]), [0, 1, 2, 1], "2 class names for labels up to 2"),
    (np.array(["a", "b"]), np.array(["a", "b", "a", "b"]), "indices"),
])
def test_bad_class_names_are_refused_before_training(tmp_path, cli, names, y, words):
    code, _, err = train(cli, tmp_path, f"npz:{npz(tmp_path, y, classes=names)}")
    one_line_error(code, err, words)
    assert not (tmp_path / "runs").exists()


def test_a_plugin_dataset_of_text_labels_works(tmp_path):
    from ptflow.data.sources import from_plugin

    class Pairs:  # a map-style Dataset with string labels, which int(y) used to crash on
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return np.full(3, i, np.float32), ["no", "yes"][i % 2]

    raw = from_plugin("pairs", lambda: Pairs(), None)
    assert raw.classes == ["no", "yes"] and raw.y.tolist() == [0, 1, 0, 1, 0, 1]


# --- CSV -----------------------------------------------------------------------------------------

def csv(tmp_path, labels) -> str:
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{label}\n" for i, label in enumerate(labels)))
    return f"csv:{path}"


def test_csv_numbers_1_1point0_and_01_are_one_class(tmp_path):
    raw = load_raw(csv(tmp_path, ["1", "1.0", "01", "2", "+2", "1e0"]))
    assert raw.classes == ["1", "2"] and raw.y.tolist() == [0, 0, 0, 1, 1, 0]


def test_csv_text_labels_are_names_as_written(tmp_path):
    raw = load_raw(csv(tmp_path, ["cat", "1", "01", "cat"]))
    assert raw.classes == ["01", "1", "cat"]  # a column with words in it is names: 1 and 01 differ


@pytest.mark.parametrize("labels, words", [
    (["1", "1.5", "2"], "not a whole number"),
    (["1", "nan", "2"], "'nan' is not a class"),
    (["1", "-inf", "2"], "is not a class"),
    (["1", "-1", "2"], "negative"),
    (["1", "1e9999", "2"], "too large"),
    (["x", "x", "x"], "at least two classes"),
])
def test_csv_labels_that_are_no_classes(tmp_path, cli, labels, words):
    code, _, err = train(cli, tmp_path, csv(tmp_path, labels * 4))
    one_line_error(code, err, words)


# --- folders -------------------------------------------------------------------------------------

def image_folder(root, names: list[bytes], per_class: int = 8) -> None:
    """Class folders named by raw bytes (maybe not UTF-8), of 8x8 grayscale PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        folder = os.path.join(os.fsencode(root), name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            x = rng.integers(0, 60, (8, 8)).astype(np.uint8)
            x[k * 2:k * 2 + 2] = 200
            Image.fromarray(x).save(os.path.join(folder, b"%d.png" % i))


def test_hidden_and_empty_folders_are_no_classes(tmp_path, capsys):
    image_folder(tmp_path, [b"cat", b"dog"])
    image_folder(tmp_path, [b".ipynb_checkpoints"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    (tmp_path / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")  # macOS litter
    raw = load_raw(f"folder:{tmp_path}")
    assert raw.classes == ["cat", "dog"] and len(raw.y) == 16
    assert capsys.readouterr().out.count("not classes") == 1


def test_a_folder_dataset_of_one_real_class_is_refused(tmp_path):
    image_folder(tmp_path, [b"cat", b".hidden"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PtflowError, match="at least two classes"):
        load_raw(f"folder:{tmp_path}")


def test_an_empty_test_class_folder_is_ignored(tmp_path):
    image_folder(tmp_path / "train", [b"cat", b"dog"])
    image_folder(tmp_path / "test", [b"cat", b"dog"], per_class=2)
    (tmp_path / "test" / "bird").mkdir()
    raw = load_raw(f"folder:{tmp_path}")
    assert raw.classes == ["cat", "dog"] and sorted(raw.y_test.tolist()) == [0, 0, 1, 1]


@pytest.fixture
def latin1_folder(tmp_path):
    """A folder dataset whose folder and class names are Latin-1 bytes, not UTF-8."""
    root = os.path.join(os.fsencode(tmp_path), b"d\xe9ta")
    try:
        os.mkdir(root)
    except OSError:  # file systems that only take UTF-8 names (macOS) cannot hold this dataset
        pytest.skip("this file system refuses names that are not UTF-8")
    image_folder(os.fsdecode(root), [b"caf\xe9", b"th\xe9", b"plain"])
    return f"folder:{os.fsdecode(root)}"


def test_non_utf8_names_work_from_data_to_report(tmp_path, cli, latin1_folder):
    """Through the CLI, whose captured stdout encodes strictly as UTF-8 (as a UTF-8 terminal does)."""
    from ptflow.models.files import load_model

    code, out, err = cli("data", latin1_folder, "--out", tmp_path / "samples.png")
    assert code == 0, err
    assert "caf\\xe9" in out and (tmp_path / "samples.png").stat().st_size > 0
    code, out, err = train(cli, tmp_path, latin1_folder)
    assert code == 0, err
    model_fn = tmp_path / "runs" / "r" / "model.safetensors"
    assert load_model(model_fn).classes == ["caf\\xe9", "plain", "th\\xe9"]
    data = model_fn.read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")].decode("utf-8"))  # valid UTF-8
    assert json.loads(header["__metadata__"]["ptflow"])["classes"] == ["caf\\xe9", "plain", "th\\xe9"]
    code, out, err = cli("evaluate", "--model_fn", model_fn, "--out_dir", tmp_path / "eval")
    assert code == 0, err
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
    code, out, err = cli("report", "r", "--runs_dir", tmp_path / "runs", "--out", tmp_path / "report.html")
    assert code == 0, err
    assert "caf\\xe9" in (tmp_path / "report.html").read_text(encoding="utf-8")
    image = os.path.join(latin1_folder.partition(":")[2], os.fsdecode(b"caf\xe9"), "0.png")
    code, out, err = cli("predict", "--model_fn", model_fn, image)
    assert code == 0, err
    assert "caf\\xe9" in out


def test_a_model_file_with_undecodable_class_names_is_served(tmp_path, tabular):
    """A file written before names were made printable: lone surrogates in its JSON. The server
    answers with the printable names, never a 5xx."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from safetensors.torch import save_file

    from ptflow.models.files import read_model_file
    from ptflow.serve.app import create_app

    state, meta = read_model_file(tabular)
    for key in ("path", "sha256"):
        meta.pop(key)
    meta["classes"] = ["caf\udce9", "\ud800"]
    meta["dataset"] = "npz:/data/d\udce9ta.npz"
    model_fn = tmp_path / "old.safetensors"
    save_file(state, str(model_fn), metadata={"ptflow": json.dumps(meta)})
    with TestClient(create_app(model_fn), base_url="http://localhost", raise_server_exceptions=False) as client:
        for _ in range(500):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.01)
        described = client.get("/v1/model")
        assert described.status_code == 200 and described.json()["classes"] == ["caf\\xe9", "\\ud800"]
        assert described.json()["dataset"] == "npz:/data/d\\xe9ta.npz"
        answer = client.post("/v1/predict", json={"inputs": [[20.0] * 6]})
        assert answer.status_code == 200 and set(answer.json()["predictions"][0]["probabilities"]) == \
            {"caf\\xe9", "\\ud800"}


# --- evaluate, plots -----------------------------------------------------------------------------

def test_evaluate_refuses_data_whose_classes_changed(tmp_path, cli):
    path = npz(tmp_path, np.tile([3, 7, 42], 20))
    code, _, err = train(cli, tmp_path, f"npz:{path}")
    assert code == 0, err
    npz(tmp_path, np.tile([3, 8, 42], 20))  # the same file, another class
    code, _, err = cli("evaluate", "--model_fn", tmp_path / "runs" / "r" / "model.safetensors")
    one_line_error(code, err, "not the model's", "'8'")


def test_a_confusion_matrix_of_many_classes_stays_a_picture(tmp_path):
    from PIL import Image

    from ptflow import plots

    n = 400
    png = plots.confusion_matrix(np.eye(n, dtype=np.int64), [str(i) for i in range(n)], tmp_path / "cm.png")
    assert max(Image.open(tmp_path / "cm.png").size) <= 24 * 300 and len(png) > 0
