"""`--interpolation bilinear|bicubic`: the resize filter of image files, end to end.

A timm model whose pretrained_cfg says bicubic trains with it by default, the model file keeps it,
and predict, the Python API and the server make the very pixels Pillow's own bicubic resize makes;
a model file without the key reads as bilinear (files from before it), one with another value is
refused in one line. The training crop resizes with the same filter: torch's uint8 bicubic against
Pillow's (without torchvision) and against torchvision's v2 pipeline.
"""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_cli
from PIL import Image

from ptflow.config import TrainConfig
from ptflow.data.crops import CropFlip, crop_box
from ptflow.data.imaging import style_of
from ptflow.data.transforms import Augmentation, train_transform
from ptflow.errors import PtflowError, UsageError

needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision is not installed (the image extra)")
needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
NAME = "timm:resnet10t"  # pretrained_cfg: interpolation bicubic
SIZE = 32


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth RGB image with sharp edges: bilinear and bicubic resizes of it differ visibly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 127 + 100 * np.sin(xx[..., None] / 5 + rng.uniform(0, 6, 3)) * np.cos(yy[..., None] / 7)
    base[height // 3: height // 2, width // 4: width // 2] = rng.uniform(0, 255, 3)  # a hard-edged block
    base[height // 2:, width // 2:] = rng.uniform(0, 255, (height - height // 2, width - width // 2, 1))  # noise
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _pillow_crop(path, size: int, crop_pct: float, resample) -> np.ndarray:
    """The evaluation transform stated in Pillow directly: shorter side to size / crop_pct, centre
    crop of size x size; uint8 (3, size, size)."""
    image = Image.open(path).convert("RGB")
    scale = size / min(image.size) / crop_pct
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), resample, reducing_gap=None)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size))).transpose(2, 0, 1)


# --- the setting ----------------------------------------------------------------------------------

@needs_timm
def test_the_default_is_a_timm_models_own_where_ptflow_has_it_else_bilinear(monkeypatch):
    from ptflow.models import timm_models

    assert timm_models.defaults(NAME)["interpolation"] == "bicubic"  # the premise
    resolved = timm_models.with_own_geometry(TrainConfig(model=NAME))
    assert resolved.interpolation == "bicubic"
    assert timm_models.with_own_geometry(TrainConfig(model=NAME, interpolation="bilinear")).interpolation == "bilinear"
    assert timm_models.with_own_geometry(TrainConfig(model="cnn")).interpolation == "bilinear"
    # a run folder's config without the key is a run from before it: it resized bilinearly
    assert timm_models.with_own_geometry(TrainConfig(model=NAME), resumed=True).interpolation == "bilinear"
    monkeypatch.setattr(timm_models, "defaults", lambda model: {"interpolation": "random"})  # timm's other names
    assert timm_models.own_interpolation(NAME) == "bilinear"


def test_a_bilinear_test_split_keeps_the_fingerprint_it_had_before_the_option():
    """The test split's fingerprint folds in geometry.key(): bilinear's is what was hashed before
    (so an old run's predictions file still matches `ptflow evaluate`), bicubic's differs."""
    from ptflow.data.geometry import Geometry

    before = json.dumps({"channels": 3, "size": [32, 24], "crop_pct": 0.875})
    assert json.dumps(Geometry(3, (32, 24), 0.875).key()) == before
    assert json.dumps(Geometry(3, (32, 24), 0.875, "bicubic").key()) != before


def test_an_unknown_filter_is_refused_in_one_line():
    with pytest.raises(UsageError, match="^--interpolation must be one of bilinear, bicubic, got 'lanczos'$"):
        TrainConfig.from_dict({"interpolation": "lanczos"})


# --- a timm model trained with its own bicubic --------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(tmp folder, model file, a 90 x 60 PNG photo) of a resnet10t trained one epoch on photos with
    --augment light (the fused crop), no --interpolation given."""
    pytest.importorskip("timm")
    from helpers.photos import write_photos

    tmp = tmp_path_factory.mktemp("interpolation")
    photos = write_photos(tmp / "photos", per_class=6).root
    assert run_cli("train", "--dataset", f"folder:{photos}", "--model", NAME, "--runs_dir", tmp / "runs",
                   "--run_name", "r", "--image_size", str(SIZE), "--augment", "light", "--n_epochs", "1",
                   "--batch_size", "8", "--verbose", "0", "--num_threads", "1") == 0
    photo = tmp / "photo.png"
    _photo(90, 60).save(photo)
    return tmp, tmp / "runs" / "r" / "model.safetensors", photo


def test_the_model_file_and_the_run_record_the_models_own_bicubic(trained):
    from ptflow.models.files import load_model

    tmp, model_fn, _ = trained
    meta = load_model(model_fn).meta
    assert meta["image_style"] == "crop" and meta["interpolation"] == "bicubic"
    assert meta["config"]["interpolation"] == "bicubic"
    assert style_of(meta) == f"crop:{meta['crop_pct']!r}:bicubic"
    run = json.loads((tmp / "runs" / "r" / "run.json").read_text())
    assert run["images"]["interpolation"] == "bicubic"


def test_predict_the_api_and_the_server_make_pillows_bicubic_pixels(trained):
    import ptflow
    from ptflow.data.inputs import collect_inputs
    from ptflow.serve.images import decode_images

    _, model_fn, photo = trained
    model = ptflow.load(model_fn)
    meta, shape = model.meta, model.input_shape
    reference = _pillow_crop(photo, SIZE, meta["crop_pct"], Image.BICUBIC)
    assert not np.array_equal(reference, _pillow_crop(photo, SIZE, meta["crop_pct"], Image.BILINEAR))
    by_predict = collect_inputs([str(photo)], shape, style_of(meta))[1]  # what `ptflow predict` runs
    by_api = model._inputs(str(photo)), model._inputs(Image.open(photo))  # a path, a PIL image
    by_server = decode_images([("photo.png", photo.read_bytes())], shape, style_of(meta), 10 ** 6, 10 ** 6)
    for x in (by_predict, *by_api, by_server):
        assert x.dtype == np.uint8 and np.array_equal(x, reference[None])


def test_the_server_and_export_describe_it_and_predict_alike(trained, capsys):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import ptflow
    from ptflow.models.export import description
    from ptflow.models.files import load_model
    from ptflow.serve.app import create_app

    _, model_fn, photo = trained
    assert description(load_model(model_fn))["interpolation"] == "bicubic"
    expected = ptflow.load(model_fn).predict_proba(str(photo))[0]
    from helpers.serving import LOCAL, wait_ready

    with TestClient(create_app(model_fn), base_url=LOCAL) as client:
        wait_ready(client)
        assert client.get("/v1/model").json()["interpolation"] == "bicubic"
        answer = client.post("/v1/predict/image", files=[("files", ("photo.png", photo.read_bytes(), "image/png"))])
    served = answer.json()["predictions"][0]["probabilities"]
    capsys.readouterr()
    assert run_cli("predict", "--model_fn", model_fn, "--format", "json", photo) == 0
    out = json.loads(capsys.readouterr().out)
    predicted = (out[0] if isinstance(out, list) else out["predictions"][0])["probabilities"]
    classes = ptflow.load(model_fn).classes
    np.testing.assert_allclose([served[c] for c in classes], expected, atol=1e-5)
    np.testing.assert_allclose([predicted[c] for c in classes], expected, atol=1e-4)  # rounded in JSON


def _rewritten(trained, path, change):
    from safetensors.torch import load_file, save_file

    from ptflow.models.files import read_model_file

    _, model_fn, _ = trained
    _, meta = read_model_file(model_fn)
    meta = {k: v for k, v in meta.items() if k not in ("path", "sha256")}
    change(meta)
    save_file(load_file(model_fn), path, metadata={"ptflow": json.dumps(meta)})
    return path


def test_a_model_file_without_the_key_reads_as_bilinear(trained, tmp_path):
    import ptflow
    from ptflow.models.export import description
    from ptflow.models.files import load_model

    _, _, photo = trained
    old = _rewritten(trained, tmp_path / "old.safetensors", lambda meta: meta.pop("interpolation"))
    model = ptflow.load(old)
    assert "interpolation" not in model.meta and description(load_model(old))["interpolation"] == "bilinear"
    reference = _pillow_crop(photo, SIZE, model.meta["crop_pct"], Image.BILINEAR)
    assert np.array_equal(model._inputs(str(photo)), reference[None])


@pytest.mark.parametrize("value", ["lanczos", 3, "BICUBIC"])
def test_another_value_in_a_model_file_is_refused_in_one_line(trained, tmp_path, capsys, value):
    from ptflow.models.files import load_model

    _, _, photo = trained
    bad = _rewritten(trained, tmp_path / "bad.safetensors", lambda meta: meta.update(interpolation=value))
    with pytest.raises(PtflowError, match="interpolation must be bilinear or bicubic"):
        load_model(bad)
    capsys.readouterr()
    assert run_cli("predict", "--model_fn", bad, photo) != 0
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "interpolation" in err


# --- the training crop ----------------------------------------------------------------------------

def test_the_fused_crops_bicubic_is_pillows_on_the_same_box():
    """Without torchvision: torch's uint8 antialiased bicubic (down and up) against Pillow's resize
    of the box the crop drew; bilinear differs from both."""
    image = _photo(97, 61)
    for size, index in (((24, 20), 0), ((24, 20), 1), ((80, 120), 2)):
        bicubic = CropFlip(size, (0.35, 1.0), 0.0, 0.0, "RGB", 127, "bicubic")
        bilinear = CropFlip(size, (0.35, 1.0), 0.0, 0.0, "RGB", 127, "bilinear")
        torch.manual_seed(index)
        top, left, h, w = crop_box(image.height, image.width, (0.35, 1.0))
        box = image.crop((left, top, left + w, top + h)).resize(size[::-1], Image.BICUBIC, reducing_gap=None)
        reference = torch.from_numpy(np.asarray(box).transpose(2, 0, 1).copy())
        torch.manual_seed(index)
        x = bicubic(image)
        torch.manual_seed(index)
        y = bilinear(image)
        assert x.dtype == torch.uint8 and x.shape == (3, *size)
        assert (x.int() - reference.int()).abs().max() <= 1  # Pillow's a = -0.5 kernel, rounded alike
        assert (y.int() - reference.int()).abs().max() > 1  # bilinear's is not within that rounding


def test_a_drafted_jpeg_is_resized_bicubic_too():
    """A photo far larger than the crop is decoded at a reduced scale, then its box resized by
    Pillow with the same filter: close to the full decode's bicubic crop, closer than bilinear's."""
    buffer = io.BytesIO()
    _photo(1600, 1200).save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    from ptflow.data.image_files import read_image

    for index in range(4):
        crops = {f: CropFlip((32, 32), (0.35, 1.0), 0.0, 0.0, "RGB", 127, f) for f in ("bicubic", "bilinear")}
        torch.manual_seed(index)
        drafted = crops["bicubic"].read(data, "big.jpg")
        torch.manual_seed(index)
        full = crops["bicubic"](read_image(data))
        torch.manual_seed(index)
        bilinear = crops["bilinear"](read_image(data))
        gap = (drafted.float() - full.float()).abs().mean()
        assert gap < 3 and gap < (bilinear.float() - full.float()).abs().mean(), index


@needs_torchvision
def test_the_fused_crop_matches_v2s_bicubic_random_resized_crop():
    """The same seed: the same box as v2.RandomResizedCrop(interpolation=BICUBIC) on the PIL image
    (Pillow's bicubic), within rounding."""
    from torchvision.transforms import InterpolationMode, v2

    size = (24, 20)
    ours = train_transform(Augmentation.of({"augment": "light"}, flip=True), size, 3, "bicubic")
    assert isinstance(ours, CropFlip) and ours.interpolation == "bicubic"
    theirs = v2.Compose([v2.RandomResizedCrop(size, scale=(0.35, 1.0), interpolation=InterpolationMode.BICUBIC,
                                              antialias=True), v2.RandomHorizontalFlip(0.5), v2.PILToTensor()])
    image = _photo(97, 61)
    for index in range(20):
        torch.manual_seed(index)
        x = ours(image)
        torch.manual_seed(index)
        y = theirs(image)
        assert (x.float() - y.float()).abs().mean() < 1.0, index


@needs_torchvision
def test_the_v2_pipelines_resize_is_bicubic():
    """Without a random crop (here a sure flip) the v2 pipeline resizes the whole image: Pillow's
    bicubic, mirrored, exactly; bilinear's differs."""
    image = _photo(90, 90)
    aug = Augmentation(preset="none", hflip=1.0)
    expected = np.asarray(image.resize((24, 24), Image.BICUBIC, reducing_gap=None))[:, ::-1].transpose(2, 0, 1)
    bicubic = train_transform(aug, (24, 24), 3, "bicubic")(image)
    bilinear = train_transform(aug, (24, 24), 3, "bilinear")(image)
    assert np.array_equal(bicubic.numpy(), expected) and not torch.equal(bicubic, bilinear)
