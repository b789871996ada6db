"""--precision fp16 (autocast with torch.amp.GradScaler) and --channels_last, checked against
invariants: the scaler path trains in float16 and the loss falls; a step whose gradients are not
finite leaves the weights exactly as they were and halves the scale; a resumed fp16 run ends with
the same weights and loss scale, bit for bit, as the run left alone; channels_last changes the
numbers only by float rounding and saves the same model file.

There is no CUDA device here: fp16 is refused on a CPU (one line, no run folder), so the tests
run the real scaler path on the CPU (torch.amp.GradScaler("cpu"), float16 autocast) by calling
the loop directly, or by letting precision.check accept the CPU for the test's duration.
"""

import importlib.util
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import assert_one_line_error, assert_same_run, make_images, signal_on_step
from safetensors import safe_open

from ptflow.config import TrainConfig
from ptflow.models.networks import Preprocess
from ptflow.training import checkpoint, interrupt, loop, precision, train
from ptflow.training.checkpoint import read_checkpoint
from ptflow.training.steps import build_optimizer


def options(data: Path, runs_dir: Path, name: str, **changes) -> dict:
    return {"dataset": f"npz:{data}", "runs_dir": str(runs_dir), "run_name": name, "n_epochs": 4,
            "batch_size": 32, "verbose": 0, "model": "cnn", "channels": [4, 8], **changes}


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """Let this test train with --precision fp16 on the CPU: the same code runs as on CUDA."""
    monkeypatch.setattr(precision, "FP16_DEVICES", ("cuda", "cpu"))


@pytest.fixture(scope="module")
def rgb_data(tmp_path_factory) -> Path:
    """Toy images of 3 channels (N, 3, 8, 8): NHWC is then another memory order than NCHW."""
    x, y = make_images(300)
    x = np.stack([x, x[:, ::-1], 255 - x], axis=1)
    path = tmp_path_factory.mktemp("rgb") / "rgb.npz"
    np.savez(path, x=np.ascontiguousarray(x), y=y)
    return path


def toy_state(scaler: bool = True) -> tuple[loop.TrainState, Preprocess]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3))
    state = loop.TrainState(model, build_optimizer(model, "adam", 1e-2, 0.0), None, torch.Generator().manual_seed(0),
                            scaler=precision.grad_scaler("fp16", torch.device("cpu")) if scaler else None)
    return state, Preprocess((1, 8, 8), 1 / 255)


def toy_data(n: int = 192) -> dict[str, torch.Tensor]:
    x, y = make_images(n)
    x, y = torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)  # |x| = (n, 1, 8, 8), uint8
    cut = n * 3 // 4
    return {"x_train": x[:cut], "y_train": y[:cut], "x_val": x[cut:], "y_val": y[cut:]}


# --- fp16 with the gradient scaler ----------------------------------------------------------------

def test_the_scaler_path_trains_in_float16_and_the_loss_falls():
    state, preprocess = toy_state()
    dtypes = set()
    state.model[0].register_forward_hook(lambda module, args, out: dtypes.add(out.dtype) if module.training else None)
    settings = loop.LoopSettings(n_epochs=5, batch_size=32, precision="fp16", verbose=0)
    loop.fit(state, preprocess, toy_data(), settings)
    losses = [h["train_loss"] for h in state.history]
    assert dtypes == {torch.float16}  # the convolution ran under float16 autocast
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] / 2
    assert state.scaler.get_scale() > 0 and state.scaler.state_dict()["_growth_tracker"] > 0  # steps went through it
    assert all(p.dtype == torch.float32 for p in state.model.parameters())  # the weights themselves stay float32


class InfiniteGradient(torch.autograd.Function):
    """Identity forward, inf backward: an overflow in a float16 backward pass, made on purpose."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


def test_a_step_with_an_infinite_gradient_is_skipped_and_the_scale_halved():
    state, preprocess = toy_state()
    calls = []

    def forward(x):  # the second training step overflows in backward; its loss stays finite
        calls.append(1)
        scores = state.model(preprocess(x))
        return InfiniteGradient.apply(scores) if len(calls) == 2 else scores

    after = []  # after each step: the weights and the scale

    def progress(done, total):
        after.append(([p.detach().clone() for p in state.model.parameters()], state.scaler.get_scale()))

    data = toy_data()
    settings = loop.LoopSettings(n_epochs=1, batch_size=32, precision="fp16", verbose=0)
    loss = loop.train_epoch(state, forward, data["x_train"], data["y_train"], settings, progress)
    (first, scale_1), (second, scale_2), (third, scale_3) = after[:3]
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # skipped: the weights exactly as they were
    assert scale_2 == scale_1 / 2 and scale_3 == scale_2  # halved once, then steady
    assert not all(torch.equal(a, b) for a, b in zip(second, third))  # the next step trains again
    assert np.isfinite(loss)


def test_without_a_scaler_the_same_step_is_plain_backward_and_step():
    """backward_and_step(scaler=None) is what fp32 and bf16 runs did before fp16 existed."""
    a, preprocess = toy_state(scaler=False)
    b, _ = toy_state(scaler=False)
    x, y = toy_data()["x_train"][:32], toy_data()["y_train"][:32]
    for state, plain in ((a, True), (b, False)):
        loss = nn.functional.cross_entropy(state.model(preprocess(x)), y)
        if plain:
            loss.backward()
            state.optimizer.step()
        else:
            precision.backward_and_step(loss, state.optimizer, None)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_the_scaler_state_goes_through_the_checkpoint_bit_for_bit(tmp_path):
    state, _ = toy_state()
    state.scaler.load_state_dict({**state.scaler.state_dict(), "scale": 1024.0 * 0.5 ** 3, "_growth_tracker": 17})
    tensors, meta = checkpoint.state_dict(state, torch.device("cpu"))
    checkpoint.save_checkpoint(tmp_path / "c.safetensors", tensors, meta)
    tensors, meta = read_checkpoint(tmp_path / "c.safetensors")
    fresh, _ = toy_state()
    checkpoint.load_state_dict(fresh, tensors, meta, torch.device("cpu"))
    assert fresh.scaler.state_dict() == state.scaler.state_dict() == {**fresh.scaler.state_dict(), "scale": 128.0,
                                                                        "_growth_tracker": 17}
    # A checkpoint written before fp16 existed has no scaler: it loads, with a fresh scale.
    older, _ = toy_state()
    checkpoint.load_state_dict(older, tensors, {k: v for k, v in meta.items() if k != "scaler"}, torch.device("cpu"))
    assert older.scaler.state_dict() == toy_state()[0].scaler.state_dict()


needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="mixup and cutmix are torchvision's")


@pytest.mark.parametrize("stop, flags", [
    ("after-epoch-2", {"ema": 0.9, "freeze_backbone_epochs": 1}),
    ("mid-epoch-3", {"ema": 0.9}),
    pytest.param("mid-epoch-3", {"mixup": 0.4, "cutmix": 1.0}, marks=needs_torchvision),
], ids=["ema-freeze-after-epoch", "ema-mid-epoch", "mixup-mid-epoch"])
def test_a_resumed_fp16_run_equals_the_run_left_alone(tmp_path, npz_data, cli, monkeypatch, fp16_on_cpu, stop,
                                                       flags):
    flags = {"precision": "fp16", **flags}
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "alone", **flags)))
    stopped = TrainConfig.from_dict(options(npz_data, tmp_path, "stopped", **flags))
    if stop == "after-epoch-2":
        def callback(state, run_dir):
            if state.epoch == 2:
                os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(interrupt.Interrupted):
            train.train_model(stopped, callbacks=[callback])
    else:
        monkeypatch.setattr(train, "epoch_bar_factory", signal_on_step(epoch=2, step=3))
        with pytest.raises(interrupt.Interrupted):
            train.train_model(stopped)
        monkeypatch.setattr(train, "epoch_bar_factory", lambda *a: None)
    run = tmp_path / "stopped"
    saved = read_checkpoint(run / "checkpoint.safetensors")[1]["scaler"]
    assert saved["scale"] > 0 and saved["_growth_tracker"] > 0  # the scale and its count are in the checkpoint
    code, _, err = cli("train", "--resume", run)
    assert code == 0, err
    assert_same_run(tmp_path / "alone", run)
    scalers = [read_checkpoint(r / "checkpoint.safetensors")[1]["scaler"] for r in (tmp_path / "alone", run)]
    assert scalers[0] == scalers[1]  # the loss scale and the steps since it changed, exactly
    assert json.loads((run / "run.json").read_text())["precision"] == "fp16"


def test_fp16_on_a_cpu_is_refused_in_one_line_before_any_run_folder(tmp_path, npz_data, cli):
    runs_dir = tmp_path / "runs"
    code, out, err = cli("train", "--dataset", f"npz:{npz_data}", "--precision", "fp16", "--device", "cpu",
                         "--runs_dir", runs_dir, "--n_epochs", "1")
    assert code == 2
    assert_one_line_error(err)
    assert "fp16 needs a CUDA device" in err and "--precision bf16" in err
    assert not runs_dir.exists()


# --- channels_last --------------------------------------------------------------------------------

def test_channels_last_changes_the_numbers_only_by_rounding(tmp_path, rgb_data):
    results = {}
    for name, flag in (("nchw", False), ("nhwc", True)):
        results[name] = train.train_model(TrainConfig.from_dict(
            options(rgb_data, tmp_path, name, channels_last=flag, num_threads=1)))
    plain, nhwc = (tmp_path / name for name in ("nchw", "nhwc"))
    weights, headers = {}, {}
    for run in (plain, nhwc):
        with safe_open(run / "model.safetensors", "pt") as f:  # the model file as written
            weights[run.name] = {k: f.get_tensor(k) for k in f.keys()}
        headers[run.name] = tensor_layout(run / "model.safetensors")
    assert headers["nchw"] == headers["nhwc"]  # the same tensors, dtypes, shapes and byte sizes
    a, b = weights["nchw"], weights["nhwc"]
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), rtol=1e-4, atol=1e-5), key
    assert results["nchw"]["test_acc"] == results["nhwc"]["test_acc"]
    import ptflow

    x = np.stack([make_images(16, seed=5)[0]] * 3, axis=1)  # |x| = (16, 3, 8, 8)
    probs = [ptflow.load(run / "model.safetensors").predict_proba(x) for run in (plain, nhwc)]
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-4)
    records = {run.name: json.loads((run / "run.json").read_text())["memory_format"] for run in (plain, nhwc)}
    # An image model's weights are NHWC on a CPU either way (oneDNN's layout); the flag adds the batches.
    assert records == {"nchw": {"weights": "channels_last", "batches": "contiguous"},
                       "nhwc": {"weights": "channels_last", "batches": "channels_last"}}


def tensor_layout(path: Path) -> dict:
    """A safetensors file's header without the byte offsets: each tensor's dtype, shape and size.
    safetensors writes a tensor's bytes in row-major (contiguous) order, whatever its strides were."""
    header_size = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_size])
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], v["data_offsets"][1] - v["data_offsets"][0]) for k, v in header.items()}


def test_channels_last_converts_image_batches_and_leaves_others():
    x = torch.zeros(2, 3, 4, 5)
    y = precision.channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous() and torch.equal(x, y)
    features = torch.zeros(2, 6)
    assert precision.channels_last(features) is features
    assert precision.layout(False)(x) is x


def test_channels_last_on_feature_data_is_refused_in_one_line(tmp_path, cli):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "features.npz", x=rng.random((100, 6)).astype(np.float32), y=rng.integers(0, 2, 100))
    code, _, err = cli("train", "--dataset", f"npz:{tmp_path / 'features.npz'}", "--channels_last",
                       "--runs_dir", tmp_path / "runs", "--n_epochs", "1", "--verbose", "0")
    assert code == 2
    assert_one_line_error(err)
    assert "--channels_last needs image data" in err
    assert not (tmp_path / "runs").exists()
