"""Image files decoded into memory or streamed from disk: one behaviour, two paths.

    python -m pytest -q tests/test_streaming.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_one_line
from helpers.photos import write_large_photos, write_photos
from safetensors.numpy import load_file

from ptflow.data.geometry import Geometry, read_pixels
from ptflow.data.imaging import style_of
from ptflow.data.inputs import collect_inputs

CNN = ("--model", "cnn", "--channels", "4,8", "--n_epochs", "2", "--batch_size", "16", "--num_threads", "1",
       "--verbose", "0")


def _train(cli, root, runs, name, *flags):
    code, _, err = cli("train", "--dataset", f"folder:{root}", "--runs_dir", runs, "--run_name", name, *CNN, *flags)
    assert code == 0, err
    return runs / name


def _same_weights(a, b) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_streamed_and_in_memory_runs_train_the_same_weights(cli, tmp_path):
    photos = write_photos(tmp_path / "photos", per_class=16)
    runs = tmp_path / "runs"
    memory = _train(cli, photos.root, runs, "memory", "--data_in_memory", "yes")
    for workers in ("0", "2"):  # in the training process, and in two worker processes
        streamed = _train(cli, photos.root, runs, f"streamed{workers}", "--data_in_memory", "no",
                          "--num_workers", workers)
        assert _same_weights(memory, streamed), f"--num_workers {workers}"
    run = json.loads((runs / "streamed2" / "run.json").read_text())
    assert run["images"]["placement"].startswith("streamed from disk")
    assert json.loads((memory / "run.json").read_text())["images"]["placement"].startswith("in memory")


def test_augmented_runs_repeat_whatever_the_worker_count(cli, tmp_path):
    pytest.importorskip("torchvision")
    photos = write_photos(tmp_path / "photos", per_class=12)
    runs = tmp_path / "runs"
    one = _train(cli, photos.root, runs, "one", "--augment", "strong", "--num_workers", "1")
    two = _train(cli, photos.root, runs, "two", "--augment", "strong", "--num_workers", "2")
    assert _same_weights(one, two)
    augmentation = json.loads((one / "run.json").read_text())["augmentation"]
    assert augmentation["preset"] == "strong" and augmentation["mixup"] == 0.2 and augmentation["hflip"] == 0.5


def test_the_evaluation_transform_is_saved_and_predict_applies_it(cli, tmp_path):
    photos = write_photos(tmp_path / "photos", per_class=8)
    run = _train(cli, photos.root, tmp_path / "runs", "r", "--image_size", "20", "--crop_pct", "0.9",
                 "--data_in_memory", "no")
    from ptflow.models.files import load_model

    loaded = load_model(str(run / "model.safetensors"))
    meta = loaded.meta
    assert meta["image_style"] == "crop" and meta["crop_pct"] == 0.9 and list(loaded.input_shape) == [3, 20, 20]
    file = photos.good[5]  # what predict feeds the model is what training decoded
    _, x = collect_inputs([str(file)], loaded.input_shape, style_of(meta))
    assert np.array_equal(x[0], read_pixels(str(file), str(file), Geometry(3, (20, 20), 0.9)))
    code, out, err = cli("predict", "--model_fn", run / "model.safetensors", str(file), "--format", "json")
    assert code == 0, err


def test_streaming_is_for_image_files(cli, tmp_path, npz_data):
    code, _, err = cli("train", "--dataset", f"npz:{npz_data}", "--data_in_memory", "no",
                       "--runs_dir", tmp_path, "--n_epochs", "1")
    assert code != 0
    assert_one_line(err, "--data_in_memory no", "arrays")


@pytest.mark.parametrize("flag,value", [("--image_size", "0"), ("--crop_pct", "1.5"), ("--crop_pct", "nan"),
                                        ("--num_workers", "-1"), ("--data_in_memory", "maybe")])
def test_bad_image_flags_are_one_line_errors(cli, tmp_path, flag, value):
    code, _, err = cli("train", flag, value, "--runs_dir", tmp_path)
    assert code != 0
    assert_one_line(err, flag.lstrip("-"))


def _vm_data_of_a_training_process() -> int:
    """Bytes of data segment a process has once torch and the trainer are imported (the build's own)."""
    probe = ("import torch, ptflow.training.train\n"
             "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmData')][0] * 1024)")
    return int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)


def test_a_capped_process_streams_a_folder_larger_than_its_cap(tmp_path):
    """Under a data-segment cap (RLIMIT_DATA, what `prlimit --data` sets) leaving 640 MiB above what
    importing torch and the trainer takes (a streamed run of this folder uses about 450 MiB more:
    the other imports, the model and Adam, float batches), a folder decoding to 2.3 times that room
    is streamed and trains; --data_in_memory yes refuses it first, in one line."""
    room = 640 << 20
    cap = _vm_data_of_a_training_process() + room
    write_large_photos(tmp_path / "big", per_class=1000, size=512)  # 2,000 x 768 KiB = 1.46 GiB decoded

    def capped():
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    def train(*flags):
        return subprocess.run([sys.executable, "-m", "ptflow", "train", "--dataset", f"folder:{tmp_path / 'big'}",
                               "--model", "mlp", "--hidden_sizes", "4", "--n_epochs", "1", "--batch_size", "8",
                               "--num_workers", "1", "--num_threads", "1", "--runs_dir", tmp_path / "runs", *flags],
                              preexec_fn=capped, capture_output=True, text=True, timeout=600)

    refused = train("--data_in_memory", "yes")
    assert refused.returncode != 0
    assert_one_line(refused.stderr, "does not fit in memory", "--data_in_memory")
    assert not (tmp_path / "runs").exists()  # refused before a run folder exists
    streamed = train("--data_in_memory", "auto")
    assert streamed.returncode == 0, streamed.stderr[-2000:]
    assert "Images: streamed from disk" in streamed.stdout + streamed.stderr


def test_a_streamed_run_stopped_mid_epoch_continues_at_the_next_batch(cli, tmp_path, monkeypatch):
    from helpers import assert_same_run, signal_on_step

    from ptflow.config import TrainConfig
    from ptflow.training import interrupt, train

    photos = write_photos(tmp_path / "photos", per_class=16)

    def config(name):
        return TrainConfig.from_dict({"dataset": f"folder:{photos.root}", "model": "cnn", "channels": [4, 8],
                                      "n_epochs": 3, "batch_size": 8, "num_threads": 1, "verbose": 0,
                                      "data_in_memory": "no", "num_workers": 1, "augment_shift": 1,
                                      "runs_dir": str(tmp_path / "runs"), "run_name": name})

    train.train_model(config("alone"))
    monkeypatch.setattr(train, "epoch_bar_factory", signal_on_step(epoch=1, step=2))
    with pytest.raises(interrupt.Interrupted):
        train.train_model(config("stopped"))
    monkeypatch.undo()
    code, out, err = cli("train", "--resume", tmp_path / "runs" / "stopped")
    assert code == 0, err
    assert "at batch 3 of epoch 2" in out
    assert_same_run(tmp_path / "runs" / "alone", tmp_path / "runs" / "stopped")


def test_a_streamed_augmented_folder_of_gray_and_colour_photos_trains(cli, tmp_path):
    pytest.importorskip("torchvision")
    photos = write_photos(tmp_path / "photos", per_class=8)  # RGB, CMYK and gray files in one folder
    assert "L" in photos.modes.values()
    run = _train(cli, photos.root, tmp_path / "runs", "r", "--augment", "light", "--data_in_memory", "no",
                 "--num_workers", "1")
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("flags", [("--augment", "light"), ("--auto_augment", "trivialaugment")],
                         ids=["random-crops", "no-random-crop"])
def test_augmented_runs_train_the_same_weights_in_memory_as_streamed(cli, tmp_path, flags):
    """Random crops are cut from the files on both paths (a crop of the image evaluation already
    resized would be a blurred one), and without a random crop both start from the image as
    evaluation sizes it (at --crop_pct): one model either way."""
    if flags[0] == "--auto_augment":
        pytest.importorskip("torchvision")
    photos = write_photos(tmp_path / "photos", per_class=12)  # mixed sizes: evaluation resizes them
    runs = tmp_path / "runs"
    memory = _train(cli, photos.root, runs, "memory", "--data_in_memory", "yes", "--crop_pct", "0.875",
                    "--num_workers", "1", *flags)
    streamed = _train(cli, photos.root, runs, "streamed", "--data_in_memory", "no", "--crop_pct", "0.875",
                      "--num_workers", "1", *flags)
    assert _same_weights(memory, streamed)
    placement = json.loads((memory / "run.json").read_text())["images"]["placement"]
    assert placement.startswith("in memory") and ("read from their files" in placement) == (flags[1] == "light")
