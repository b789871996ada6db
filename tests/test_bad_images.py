"""Broken image files in a `folder:` dataset: `--bad_images fail` stops at one, `skip` leaves them out and says so.

The data is tests/helpers/photos.py's photo-like folder: shapes on noise at mixed sizes, RGB and
CMYK JPEGs, RGB and grayscale PNGs, and one file of each broken kind. The references: the same
folder without its broken files (skipping a file is exactly leaving it out), and the same run
left alone (a resumed run that skipped files ends exactly as it would have).

    python -m pytest -q tests/test_bad_images.py
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, assert_same_run
from helpers.photos import BROKEN, write_photos
from PIL import Image

from ptflow.config import TrainConfig
from ptflow.data.bad_images import BadImages
from ptflow.data.formats import folder
from ptflow.data.geometry import Geometry, read_pixels
from ptflow.data.image_files import read_image
from ptflow.data.imaging import to_pixels
from ptflow.training import interrupt, train

# What the one line says about each broken file of the fixture, besides its path.
WHY = {"truncated.jpg": "not a readable image, damaged or truncated", "empty.jpg": "an empty file (0 bytes)",
       "notes.jpg": "not an image in an accepted format", "vector.png": "not an image in an accepted format",
       "scan.tif": ".tif images are not read", "bomb.png": "image too large"}
PROBLEM = {"damaged": "damaged", "not an image": "not an image", "format": "format not accepted",
           "too large": "too many pixels"}  # the fixture's kinds as bad_images.jsonl names them
SMALL = ("--n_epochs", "2", "--batch_size", "16", "--num_threads", "1", "--verbose", "0")


def options(root: Path, runs_dir: Path, name: str, **changes) -> dict:
    return {"dataset": f"folder:{root}", "runs_dir": str(runs_dir), "run_name": name, "n_epochs": 3,
            "batch_size": 16, "num_threads": 1, "verbose": 0, "bad_images": "skip", "max_bad_fraction": 0.2,
            **changes}


@pytest.mark.parametrize("name", BROKEN)
def test_fail_stops_with_one_line_naming_the_file_and_why_before_a_run_folder(cli, tmp_path, name):
    photos = write_photos(tmp_path / "photos", broken=(name,))
    (bad,) = photos.bad
    code, out, err = cli("train", "--dataset", f"folder:{photos.root}", "--runs_dir", tmp_path / "runs", *SMALL)
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert f"{bad}: {WHY[name]}" in err
    assert not (tmp_path / "runs").exists()


def test_skip_trains_and_lists_each_file_with_its_reason(cli, tmp_path):
    photos = write_photos(tmp_path / "photos", broken=True, split=True)  # broken files in train/ and test/
    runs = tmp_path / "runs"
    code, _, err = cli("train", "--dataset", f"folder:{photos.root}", "--bad_images", "skip",
                       "--max_bad_fraction", "0.2", "--runs_dir", runs, "--run_name", "skip", *SMALL)
    assert code == 0, err
    listed = [json.loads(line) for line in (runs / "skip" / "bad_images.jsonl").read_text().splitlines()]
    assert {Path(r["file"]): r["problem"] for r in listed} == {f: PROBLEM[k] for f, k in photos.bad.items()}
    for record in listed:
        assert WHY[Path(record["file"]).name] in record["reason"]
    assert {Path(r["file"]).parts[-3] for r in listed} == {"train", "test"}
    assert json.loads((runs / "skip" / "run.json").read_text())["bad_images"] == len(photos.bad)

    code, out, _ = cli("runs", "--runs_dir", runs)
    header, _, row = out.splitlines()[:3]
    column = header.index("images skipped")
    assert row.startswith("skip ") and row[column:column + len("images skipped")].strip() == str(len(photos.bad))
    code, out, _ = cli("runs", "show", "skip", "--runs_dir", runs)
    assert any(line.split() == ["images", "skipped", str(len(photos.bad))] for line in out.splitlines())
    code, out, _ = cli("runs", "--runs_dir", runs, "--json")
    assert json.loads(out)[0]["bad_images"] == len(photos.bad)

    # evaluate rebuilds the test split as training made it: the same files skipped, the same accuracy
    code, out, err = cli("evaluate", "--model_fn", runs / "skip" / "model.safetensors", "--out_dir", tmp_path / "eval")
    assert code == 0 and "differ" not in err, err
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["accuracy"] == json.loads((runs / "skip" / "run.json").read_text())["test_acc"]


def test_skipping_is_leaving_the_files_out(tmp_path):
    # The same model as from the folder without its broken files, and the same model file evaluates both.
    broken = write_photos(tmp_path / "broken", broken=True)
    clean = write_photos(tmp_path / "clean")
    a = train.train_model(TrainConfig.from_dict(options(broken.root, tmp_path / "runs", "skipped", n_epochs=2)))
    b = train.train_model(TrainConfig.from_dict(options(clean.root, tmp_path / "runs", "clean", n_epochs=2,
                                                        bad_images="fail")))
    from safetensors.torch import load_file

    weights_a, weights_b = (load_file(Path(r["run_dir"]) / "model.safetensors") for r in (a, b))
    assert weights_a.keys() == weights_b.keys()
    assert all(np.array_equal(weights_a[k].numpy(), weights_b[k].numpy()) for k in weights_a)
    assert a["test_acc"] == b["test_acc"]


def test_a_clean_folder_has_the_same_fingerprint_either_way(tmp_path):
    photos = write_photos(tmp_path / "photos")
    fail, skip = (folder.load(photos.root, None, BadImages(policy, 0.01)) for policy in ("fail", "skip"))
    assert skip.skipped == [] and fail.x.files == skip.x.files and np.array_equal(fail.y, skip.y)
    from ptflow.data.splits import split

    assert split("a", fail, 0.8, 0.2, 0).fingerprint == split("b", skip, 0.8, 0.2, 0).fingerprint


@pytest.mark.parametrize("ceiling, stops", [(0.1, True), (0.0, True), (0.12, False)])
def test_the_ceiling_stops_with_how_many_of_how_many(cli, tmp_path, ceiling, stops):
    photos = write_photos(tmp_path / "photos", broken=True)  # 6 broken of 54 image files: 11%
    total = len(photos.good) + len(photos.bad)
    runs = tmp_path / "runs"
    code, _, err = cli("train", "--dataset", f"folder:{photos.root}", "--bad_images", "skip",
                       "--max_bad_fraction", ceiling, "--runs_dir", runs, *SMALL)
    if not stops:
        assert code == 0, err
        return
    assert code == 1 and not runs.exists()
    assert_one_line_error(err)
    allowed = int(ceiling * total)
    assert f"at least {allowed + 1} of the {total} image files cannot be read" in err
    assert f"--max_bad_fraction {ceiling:g}" in err and str(photos.root) in err


def test_resume_after_skipping_is_exact_and_needs_the_same_skipped_files(cli, tmp_path):
    photos = write_photos(tmp_path / "photos", broken=True)
    train.train_model(TrainConfig.from_dict(options(photos.root, tmp_path, "alone")))

    def stop_after_first_epoch(state, run_dir):
        if state.epoch == 1:
            raise interrupt.Interrupted(signal.SIGINT)  # as a Ctrl-C after epoch 1

    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(options(photos.root, tmp_path, "stopped")),
                          callbacks=[stop_after_first_epoch])
    run = tmp_path / "stopped"
    listed = (run / "bad_images.jsonl").read_text()
    code, _, err = cli("train", "--resume", run)
    assert code == 0, err
    assert_same_run(tmp_path / "alone", run)
    assert (run / "bad_images.jsonl").read_text() == listed
    assert json.loads((run / "run.json").read_text())["bad_images"] == len(photos.bad)

    # Another broken file leaves the arrays as they were, but not the files skipped: refused.
    (photos.root / "cross" / "another.jpg").write_bytes(b"")
    code, _, err = cli("train", "--resume", run, "--n_epochs", "4")
    assert code == 1 and "the data changed" in err
    assert_one_line_error(err)


def test_the_fixtures_good_images_all_load(tmp_path):
    photos = write_photos(tmp_path / "photos")
    assert {photos.modes[f] for f in photos.good} == {"RGB", "CMYK", "L"}
    sizes = {Image.open(f).size for f in photos.good}
    assert len(sizes) > 5  # mixed sizes
    raw = folder.load(photos.root)  # listed from the headers: nothing decoded yet
    assert raw.x.files == [str(f) for f in photos.good] and raw.skipped == []  # class folders, then names
    assert [tuple(s) for s in raw.x.sizes.tolist()] == [Image.open(f).size[::-1] for f in photos.good]
    assert np.bincount(raw.y).tolist() == [len(photos.good) // len(photos.classes)] * len(photos.classes)
    for i, file in enumerate(photos.good):
        with Image.open(file) as image:  # the reference: PIL's own conversion to RGB, at the image's own size
            expected = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
        native = Geometry(3, tuple(raw.x.sizes[i]), 1.0)
        assert np.array_equal(read_pixels(raw.x.source(i), raw.x.name(i), native), expected), file
        if photos.modes[file] == "L":  # grayscale stays one channel, as stored, where a model takes one
            with Image.open(file) as image:
                assert np.array_equal(to_pixels(read_image(file), 1)[0], np.asarray(image))


def test_predict_still_stops_at_a_broken_file(cli, tmp_path):
    # predict answers for every file it is given, so a broken one stops it rather than losing a row.
    photos = write_photos(tmp_path / "photos", broken=("truncated.jpg",))
    code, _, err = cli("train", "--dataset", f"folder:{photos.root}", "--bad_images", "skip",
                       "--max_bad_fraction", "0.1", "--runs_dir", tmp_path / "runs", "--run_name", "r", *SMALL)
    assert code == 0, err
    code, out, err = cli("predict", "--model_fn", tmp_path / "runs" / "r" / "model.safetensors",
                         photos.root / "circle")
    (bad,) = photos.bad
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert f"{bad}: {WHY['truncated.jpg']}" in err


def test_data_shows_what_training_would_skip(cli, tmp_path):
    photos = write_photos(tmp_path / "photos", broken=("truncated.jpg", "empty.jpg"))
    code, _, err = cli("data", f"folder:{photos.root}", "--out", tmp_path / "grid.png")
    assert code == 1 and not (tmp_path / "grid.png").exists()  # fail, the default: one line naming a file
    assert_one_line_error(err)
    assert any(str(bad) in err for bad in photos.bad)
    code, out, err = cli("data", f"folder:{photos.root}", "--bad_images", "skip", "--max_bad_fraction", "0.2",
                         "--out", tmp_path / "grid.png")
    assert code == 0, err
    assert f"unreadable   2 image file(s) of {len(photos.good) + 2} skipped" in out
    for bad in photos.bad:  # each file with why, as train's bad_images.jsonl would list it
        assert f"  {bad}: " in out


@pytest.mark.parametrize("flags, message", [(("--max_bad_fraction", "1.5"), "--max_bad_fraction must be in [0, 1]"),
                                            (("--max_bad_fraction", "nan"), "--max_bad_fraction must be a finite"),
                                            (("--bad_images", "drop"), "invalid choice: 'drop'")])
def test_bad_values_are_refused_before_any_work(cli, tmp_path, flags, message):
    code, _, err = cli("train", "--dataset", f"folder:{tmp_path / 'none'}", *flags, "--runs_dir", tmp_path / "runs")
    assert code != 0 and message in err and not (tmp_path / "runs").exists()
    assert_one_line_error(err)
