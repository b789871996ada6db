"""`--model timm:NAME`, its own preprocessing, `--pretrained(_path)` and `ptflow models`, offline.

A tiny timm network (resnet10t at 32 x 32) trains one epoch on a photo folder; its model file
then becomes the starting weights of a run with fewer classes and gray images.
"""

import json
import os
import shutil

import pytest

timm = pytest.importorskip("timm")

import torch  # noqa: E402
from helpers import run_cli  # noqa: E402
from helpers.photos import write_photos  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from ptflow.errors import PtflowError, UsageError  # noqa: E402
from ptflow.models import pretrained, registry, timm_models  # noqa: E402
from ptflow.models.files import load_model  # noqa: E402

NAME = "timm:resnet10t"
FAST = ["--image_size", "32", "--n_epochs", "1", "--batch_size", "8", "--verbose", "0", "--num_threads", "1"]


def train(tmp, dataset, run_name, *flags) -> int:
    return run_cli("train", "--dataset", f"folder:{dataset}", "--model", NAME, "--runs_dir", tmp / "runs",
                   "--run_name", run_name, *FAST, *flags)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resnet10t trained on 4 classes of RGB photos: (tmp folder, its model file)."""
    tmp = tmp_path_factory.mktemp("timm")
    write_photos(tmp / "photos")
    assert train(tmp, tmp / "photos", "rgb") == 0
    return tmp, tmp / "runs" / "rgb" / "model.safetensors"


def gray_photos(tmp, source):
    """The photos in 3 of their 4 classes, as gray PNGs: another class count and channel count."""
    root = tmp / "gray"
    for folder in sorted(p for p in source.iterdir() if p.is_dir())[:3]:
        (root / folder.name).mkdir(parents=True)
        for i, path in enumerate(sorted(folder.iterdir())):
            Image.open(path).convert("L").save(root / folder.name / f"{i:03d}.png")
    return root


def test_a_trained_timm_model_loads_without_trust_and_carries_its_own_preprocessing(trained, capsys):
    tmp, path = trained
    own = timm_models.defaults(NAME)
    loaded = load_model(path)  # trust_code=False: timm:NAME is a name, not code
    assert loaded.meta["model_source"]["kind"] == "timm"
    assert loaded.meta["versions"]["timm"] == timm.__version__
    assert loaded.meta["model_args"] == {"num_classes": 4, "in_chans": 3}
    # No --normalize or --crop_pct given: the model's pretrained_cfg says them
    assert loaded.meta["preprocessing"]["mean"] == own["mean"] and loaded.meta["preprocessing"]["std"] == own["std"]
    assert loaded.meta["crop_pct"] == own["crop_pct"] and loaded.meta["config"]["image_size"] == 32
    saved = load_file(path)
    assert all(torch.equal(saved[k], v) for k, v in loaded.model.state_dict().items())
    photo = next((tmp / "photos").rglob("*.png"))
    capsys.readouterr()
    assert run_cli("predict", "--model_fn", path, "--format", "json", photo) == 0
    out = json.loads(capsys.readouterr().out)
    row = out[0] if isinstance(out, list) else out["predictions"][0]
    assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-3)


def test_pretrained_path_loads_the_backbone_reinitialises_the_head_and_adapts_the_first_conv(trained, capsys):
    tmp, path = trained
    file = load_file(path)
    model = registry.build(NAME, {"num_classes": 3, "in_chans": 1})
    fresh_head = model.fc.weight.detach().clone()
    summary = pretrained.apply(model, NAME, False, str(path))
    assert sorted(summary["reinitialised"]) == ["fc.bias", "fc.weight"]
    assert summary["adapted"] == ["conv1.0.weight"] and summary["missing"] == [] and summary["unused"] == []
    assert summary["loaded"] == len(file) - 2
    state = model.state_dict()
    assert torch.equal(state["fc.weight"], fresh_head)  # the fresh head kept
    assert torch.allclose(state["conv1.0.weight"], file["conv1.0.weight"].sum(dim=1, keepdim=True))  # RGB summed
    backbone = [k for k in file if not k.startswith(("fc.", "conv1.0."))]
    assert backbone and all(torch.equal(state[k], file[k]) for k in backbone)
    # The same through the CLI, with its one-line summary
    capsys.readouterr()
    assert train(tmp, gray_photos(tmp, tmp / "photos"), "gray", "--pretrained_path", path) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Pretrained weights")]
    assert len(lines) == 1 and "re-initialised" in lines[0] and "conv1.0.weight" in lines[0]
    assert load_model(tmp / "runs" / "gray" / "model.safetensors").meta["model_args"]["in_chans"] == 1
    recorded = json.loads((tmp / "runs" / "gray" / "run.json").read_text())["pretrained"]
    assert recorded["adapted"] == ["conv1.0.weight"] and sorted(recorded["reinitialised"]) == ["fc.bias", "fc.weight"]


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))  # what unpickling would run


def test_a_pth_with_pickled_code_is_refused_in_one_line(trained, capsys):
    tmp, path = trained
    evil, marker = tmp / "evil.pth", tmp / "pwned"
    torch.save({"state_dict": load_file(path), "extra": Evil(marker)}, evil)
    with pytest.raises(PtflowError, match="pickled Python objects"):
        pretrained.read_weights(evil)
    capsys.readouterr()
    assert train(tmp, tmp / "photos", "evil", "--pretrained_path", evil) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights-only" in err
    assert not marker.exists() and not (tmp / "runs" / "evil").exists()
    # A weights-only .pth of the same tensors loads
    plain = tmp / "plain.pth"
    torch.save({"model": load_file(path)}, plain)
    assert set(pretrained.read_weights(plain)) == set(load_file(path))


def test_pretrained_offline_is_one_line_naming_pretrained_path(trained, capsys, monkeypatch):
    tmp, _ = trained
    monkeypatch.setattr(pretrained, "_reachable", lambda host, timeout=3.0: False)  # offline, wherever CI runs
    cache = tmp / "empty_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    capsys.readouterr()
    assert train(tmp, tmp / "photos", "hub", "--pretrained") != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--pretrained_path" in err and "no network" in err
    assert run_cli("train", "--model", "cnn", "--pretrained", "--n_epochs", "1") != 0  # the hub is timm's only
    shutil.rmtree(cache, ignore_errors=True)


def test_an_unknown_timm_name_is_one_line_with_close_matches(trained, capsys):
    tmp, _ = trained
    capsys.readouterr()
    assert run_cli("train", "--dataset", f"folder:{tmp / 'photos'}", "--model", "timm:resnet1O",
                   "--runs_dir", tmp / "runs", *FAST) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown timm model 'resnet1O'" in err and "did you mean timm:resnet" in err


def test_without_timm_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(UsageError, match=r'pip install "ptflow\[vision\]"'):
        registry.build(NAME, {"num_classes": 3, "in_chans": 1})


def test_models_lists_timm_families_with_their_parameter_counts(capsys):
    assert run_cli("models", "--filter", "resnet1*") == 0
    out = capsys.readouterr().out
    assert "timm:resnet18 " in out and "mlp" not in out
    real = sum(p.numel() for p in timm.create_model("resnet18").parameters())
    row = next(line for line in out.splitlines() if line.startswith("timm:resnet18 "))
    assert row.split()[-1] == f"{real:,}"
    assert run_cli("models", "--limit", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("mlp") and out[2].startswith("cnn") and "more" in out[-1]
