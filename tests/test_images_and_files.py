"""The same image is the same input in training and at prediction; model files and declared sizes.

    python -m pytest -q tests/test_images_and_files.py
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from ptflow.data.bad_images import BadImages
from ptflow.data.geometry import choose
from ptflow.data.imaging import flatten, style_of
from ptflow.data.inputs import collect_inputs
from ptflow.data.records import decode_all
from ptflow.data.sources import load_raw
from ptflow.errors import PtflowError

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)  # |PIXELS| = (height, width, rgb)


def variants() -> dict[str, Image.Image]:
    """One picture in many modes and encodings."""
    rgb = Image.fromarray(PIXELS, "RGB")
    gray = rgb.convert("L")
    rgba = rgb.convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[::2, ::3, 3] = 0  # some pixels fully transparent
    alpha[1::2, ::2, 3] = 128  # some half
    images = {
        "rgb.png": rgb, "gray.png": gray, "rgba.png": Image.fromarray(alpha, "RGBA"),
        "la.png": Image.fromarray(alpha, "RGBA").convert("LA"), "p.png": rgb.convert("P"),
        "bilevel.png": gray.convert("1"), "cmyk.jpg": rgb.convert("CMYK"), "ycbcr.jpg": rgb.convert("YCbCr"),
        "i16.png": Image.fromarray(np.asarray(gray).astype(np.uint16) * 257),
    }  # float and LAB pixels need TIFF, not an accepted format: they come only as PIL images (the API)
    transparent_p = rgb.convert("P")
    transparent_p.info["transparency"] = 0
    images["p-transparent.png"] = transparent_p
    return images


def save_rotated(image: Image.Image, path) -> None:
    """Pixels stored turned a quarter, with EXIF orientation 6 saying how to turn them back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for label in ("a", "b"):
        (root / label).mkdir()
        for name, image in variants().items():
            image.save(root / label / name)
        save_rotated(Image.fromarray(PIXELS, "RGB"), root / label / "rotated.jpg")
    return root


@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_is_the_same_input_in_training_and_prediction(tmp_path, folder, channels):
    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        # a gray or an RGB image first, beside the fixture's images of other modes and sizes
        Image.fromarray(PIXELS, "RGB").convert("RGB" if channels == 3 else "L").save(root / label / "0-first.png")
        for file in sorted((folder / label).iterdir()):
            (root / label / file.name).write_bytes(file.read_bytes())
    raw = load_raw(f"folder:{root}")  # listed, then decoded as training decodes it (geometry.py)
    files = [f for label in ("a", "b") for f in sorted((root / label).iterdir())]
    assert raw.x.files == [str(f) for f in files]
    gray = bool(raw.x.gray.all())  # one channel only where every image has one
    geometry = choose([tuple(s) for s in raw.x.sizes.tolist()], gray, None, None)
    assert geometry.size[0] == geometry.size[1] and geometry.crop_pct == 0.875  # mixed sizes: square, cropped
    x_train, _ = decode_all(raw.x, geometry, BadImages("fail", 0.0))
    meta = {"image_style": "crop", "crop_pct": geometry.crop_pct}
    for row, file in zip(x_train, files):
        _, x = collect_inputs([str(file)], geometry.shape, style_of(meta))
        assert np.array_equal(x[0], row), file.name


def test_exif_orientation_and_transparency_are_applied(folder):
    upright = flatten(Image.open(folder / "a" / "rotated.jpg"))
    assert upright.size == (10, 12)  # (width, height) as the picture was taken, not as stored
    rgba = flatten(Image.open(folder / "a" / "rgba.png"))
    assert np.asarray(rgba)[0, 0].tolist() == [255, 255, 255]  # fully transparent: the white background
    assert np.asarray(rgba)[1, 1].tolist() == PIXELS[1, 1].tolist()  # opaque: the pixel itself


def test_deep_and_float_pixels_come_to_eight_bits(folder):
    gray = np.asarray(Image.fromarray(PIXELS, "RGB").convert("L"))
    assert np.array_equal(np.asarray(flatten(Image.open(folder / "a" / "i16.png"))), gray)  # 257 * v >> 8 == v
    floats = Image.fromarray(gray.astype(np.float32) / 255)
    assert np.array_equal(np.asarray(flatten(floats)), gray)  # 0..1 floats * 255


# --- model files --------------------------------------------------------------------------------

def rewrite(trained_file, path, change) -> None:
    from safetensors.torch import load_file, save_file

    from ptflow.models.files import read_model_file

    _, meta = read_model_file(trained_file)
    meta = {k: v for k, v in meta.items() if k not in ("path", "sha256")}
    change(meta)
    save_file(load_file(trained_file), path, metadata={"ptflow": json.dumps(meta)})


def test_unknown_keys_are_kept_and_older_files_load(tmp_path, trained):
    from ptflow.models.files import load_model
    from ptflow.models.inference import predict_proba

    x = np.zeros((2, 1, 8, 8), np.uint8)
    expected = predict_proba(load_model(trained["safetensors"]), x)
    rewrite(trained["safetensors"], tmp_path / "newer.safetensors",
            lambda m: m.update(temperature=1.5, calibration={"method": "temperature"}))
    newer = load_model(tmp_path / "newer.safetensors")
    assert newer.meta["temperature"] == 1.5
    rewrite(trained["safetensors"], tmp_path / "older.safetensors",
            lambda m: [m.pop(k) for k in ("model_source", "format_version", "image_style", "metrics", "run")])
    older = load_model(tmp_path / "older.safetensors")
    assert np.array_equal(predict_proba(older, x), expected)
    assert np.array_equal(predict_proba(load_model(trained["pth"]), x), expected)


def test_the_format_comes_from_the_bytes_not_the_name(tmp_path, trained):
    from ptflow.models.files import read_model_file

    renamed = tmp_path / "model.pth"  # safetensors bytes behind a .pth name
    renamed.write_bytes(trained["safetensors"].read_bytes())
    state, meta = read_model_file(renamed)
    assert meta["classes"] == read_model_file(trained["safetensors"])[1]["classes"]


def test_weights_that_do_not_fit_the_description_are_refused_before_building(tmp_path, trained, monkeypatch):
    import torch
    from safetensors.torch import load_file, save_file

    from ptflow.models import mlp
    from ptflow.models.files import load_model, read_model_file

    _, meta = read_model_file(trained["safetensors"])
    meta = {k: v for k, v in meta.items() if k not in ("path", "sha256")}
    state = load_file(trained["safetensors"])
    first = next(k for k in state if k.endswith("weight"))
    state[first] = torch.zeros(state[first].shape[0] + 1, state[first].shape[1])
    save_file(state, tmp_path / "wrong.safetensors", metadata={"ptflow": json.dumps(meta)})
    built = []
    original = mlp.MLP.__init__

    def spy(self, *args, **kwargs):
        built.append(torch.empty(0).device.type)  # the default device: "meta" inside the shape check
        original(self, *args, **kwargs)

    monkeypatch.setattr(mlp.MLP, "__init__", spy)
    with pytest.raises(PtflowError, match=f"{first}"):
        load_model(tmp_path / "wrong.safetensors")
    assert built == ["meta"]  # only the shapes were built: no real weights allocated


# --- declared sizes ----------------------------------------------------------------------------

def test_idx_dimensions_are_checked_before_allocating(tmp_path):
    from ptflow.data.idx import read_idx

    header = b"\x00\x00\x08\x03" + struct.pack(">3I", 60_000, 28, 28)
    (tmp_path / "raw").write_bytes(header + bytes(1000))
    with pytest.raises(PtflowError, match="declares 47,040,000 bytes"):
        read_idx(tmp_path / "raw")
    (tmp_path / "small.gz").write_bytes(gzip.compress(header + bytes(1000)))
    with pytest.raises(PtflowError, match="declares"):
        read_idx(tmp_path / "small.gz")


def test_npz_shapes_are_checked_against_their_entries(tmp_path):
    from ptflow.data.readers import read_npz

    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.savez_compressed(tmp_path / "ok.npz", x=x, y=np.arange(3))
    assert np.array_equal(read_npz(tmp_path / "ok.npz")["x"], x)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        header = "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 5), }"
        header += " " * (118 - len(header)) + "\n"
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(12))
    (tmp_path / "short.npz").write_bytes(buffer.getvalue())
    with pytest.raises(PtflowError, match="truncated or corrupt"):
        read_npz(tmp_path / "short.npz")


def test_parameter_limit_is_checked_on_the_meta_device():
    from ptflow.errors import UsageError
    from ptflow.models import registry

    with pytest.raises(UsageError, match="parameters, more than"):
        registry.build("mlp", {"input_size": 784, "output_size": 10, "hidden_sizes": [2 ** 22] * 2})
