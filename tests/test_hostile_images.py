"""Untrusted image files: every reader opens only the accepted formats, whatever a file's name says.

The readers: `ptflow predict`, `folder:` datasets, the Python API and the server. The reference
for "PIL's other plugins are never reached" is a stand-in `gs` on PATH that leaves a marker when
run: PIL's EPS plugin does run it (checked first), ptflow's readers never do. Each refusal is
one line naming the file and the accepted formats (a 4xx from the server).

    python -m pytest -q tests/test_hostile_images.py
"""

from __future__ import annotations

import base64
import io
import os
import threading

import numpy as np
import pytest
from helpers import assert_one_line
from PIL import EpsImagePlugin, Image

import ptflow
from ptflow.data.image_files import FORMAT_NAMES, ImageTooLarge, read_image
from ptflow.errors import PtflowError

LOCAL = "http://localhost"  # without an API key, the server answers loopback Host names only
REFUSED = f"not an image in an accepted format ({FORMAT_NAMES})"
# Formats PIL reads and ptflow does not, each written by PIL itself: containers with a directory
# (ICO, TIFF), and plain ones that simply are not on the list.
OTHER_FORMATS = {"ICO": "ico", "TIFF": "tiff", "TGA": "tga", "PCX": "pcx", "PPM": "ppm", "SGI": "sgi", "EPS": "eps"}


def encoded(format: str, size: int = 8) -> bytes:
    image = Image.new("L", (size, size), 0)
    image.paste(200, (2, 2, 6, 6))
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture
def ghostscript(tmp_path, monkeypatch):
    """A stand-in `gs` first on PATH that writes a marker file whenever anything runs it."""
    marker = tmp_path / "gs-was-run"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # PIL caches where gs is: look again
    return marker


@pytest.fixture
def postscript_png(tmp_path):
    """A PostScript file named x.png."""
    path = tmp_path / "x.png"
    path.write_bytes(encoded("EPS"))
    return path


def test_the_stand_in_sees_pils_eps_plugin_run_ghostscript(ghostscript, postscript_png):
    # The reference: opened with PIL's whole list, the file reaches Ghostscript.
    with pytest.raises(Exception):  # noqa: B017 - whatever the stand-in's empty answer makes PIL raise
        Image.open(postscript_png).load()
    assert ghostscript.exists()


def test_predict_refuses_postscript_named_png(cli, trained, ghostscript, postscript_png):
    code, out, err = cli("predict", "--model_fn", trained["safetensors"], postscript_png)
    assert code == 1 and out == ""
    assert_one_line(err, f"{postscript_png}: {REFUSED}")
    assert not ghostscript.exists()


def test_folder_dataset_refuses_postscript_named_png_before_a_run_starts(cli, tmp_path, ghostscript,
                                                                         postscript_png):
    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        (root / label / "0.png").write_bytes(encoded("PNG"))
    (root / "b" / "x.png").write_bytes(postscript_png.read_bytes())
    runs = tmp_path / "runs"
    code, _, err = cli("train", "--dataset", f"folder:{root}", "--n_epochs", "1", "--runs_dir", runs)
    assert code == 1
    assert_one_line(err, f"{root / 'b' / 'x.png'}: {REFUSED}")
    assert not ghostscript.exists() and not runs.exists()


def test_the_python_api_refuses_postscript_named_png(trained, tmp_path, ghostscript, postscript_png):
    model = ptflow.load(trained["safetensors"])
    for given in (postscript_png, str(postscript_png), [postscript_png], postscript_png.parent):
        with pytest.raises(PtflowError, match=r"x\.png: not an image in an accepted format"):
            model.predict(given)
    with pytest.raises(PtflowError, match=r"x\.png: not an image in an accepted format"):
        ptflow.train(f"folder:{_folder_with(tmp_path / 'api', postscript_png.read_bytes())}", n_epochs=1,
                     runs_dir=str(tmp_path / "runs"), verbose=0)
    assert not ghostscript.exists() and not (tmp_path / "runs").exists()


def _folder_with(root, data: bytes):
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        (root / label / "0.png").write_bytes(encoded("PNG"))
    (root / "a" / "x.png").write_bytes(data)
    return root


@pytest.fixture
def server(trained, ghostscript):
    """The app with its decode processes, started with the stand-in gs on their PATH."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ptflow.serve.app import Settings, create_app

    with TestClient(create_app(trained["safetensors"], Settings()), base_url=LOCAL) as client:
        for _ in range(500):
            if client.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.01)
        yield client


def test_the_server_refuses_postscript_named_png_with_415(server, ghostscript, postscript_png):
    data = postscript_png.read_bytes()
    upload = server.post("/v1/predict/image", files=[("files", ("x.png", data, "image/png"))])
    as_json = server.post("/v1/predict", json={"images": [base64.b64encode(data).decode()]})
    assert (upload.status_code, upload.json()["detail"]) == (415, f"x.png: {REFUSED}")
    assert (as_json.status_code, as_json.json()["detail"]) == (415, f"images[0]: {REFUSED}")
    assert not ghostscript.exists()


@pytest.mark.parametrize("format", sorted(OTHER_FORMATS))
def test_other_formats_are_refused_by_content_whatever_their_name(cli, tmp_path, trained, format):
    data = encoded(format)
    assert Image.open(io.BytesIO(data)).format == format  # PIL itself would read it
    disguised = tmp_path / "x.png"
    disguised.write_bytes(data)
    code, _, err = cli("predict", "--model_fn", trained["safetensors"], disguised)
    assert code == 1
    assert_one_line(err, f"{disguised}: {REFUSED}")
    with pytest.raises(PtflowError, match="not an image in an accepted format"):
        read_image(data, "upload")


@pytest.mark.parametrize("format", sorted(OTHER_FORMATS))
def test_other_formats_by_name_are_refused_not_skipped_in_folders(cli, tmp_path, trained, format):
    # Skipping them would train on, or predict, less than the folder holds without a word.
    root = tmp_path / "data"
    other = root / "b" / f"x.{OTHER_FORMATS[format]}"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        (root / label / "0.png").write_bytes(encoded("PNG"))
    other.write_bytes(encoded(format))
    (root / "a" / "notes.txt").write_text("not an image, and not named as one: skipped")
    for args in (["train", "--dataset", f"folder:{root}", "--runs_dir", tmp_path / "runs"],
                 ["predict", "--model_fn", trained["safetensors"], root]):
        code, _, err = cli(*args)
        assert code == 1
        assert_one_line(err, str(other), f"accepted formats: {FORMAT_NAMES}")
    assert not (tmp_path / "runs").exists()


def test_every_accepted_format_is_read_by_content_and_by_name(tmp_path, trained):
    # The allow-list is not a name check: a PNG named .jpg is a PNG. Every accepted suffix in a
    # folder is read, the same pixels as the PNG where the format is lossless.
    from ptflow.data.inputs import collect_inputs

    folder = tmp_path / "in"
    folder.mkdir()
    for format, suffix in (("PNG", "png"), ("PNG", "jpg"), ("GIF", "gif"), ("BMP", "bmp"), ("JPEG", "jpeg"),
                           ("WEBP", "webp")):
        (folder / f"{format}-as.{suffix}").write_bytes(encoded(format))
    names, x = collect_inputs([str(folder)], (1, 8, 8))
    assert [n.rsplit("/", 1)[-1] for n in names] == sorted(p.name for p in folder.iterdir())
    reference = np.array(Image.open(io.BytesIO(encoded("PNG"))))[None]
    lossless = [0, 1, 3, 4]  # in name order: BMP, GIF, JPEG, PNG-as.jpg, PNG-as.png, WEBP (lossy by default)
    np.testing.assert_array_equal(x[lossless], np.repeat(reference[None], len(lossless), 0))
    assert ptflow.load(trained["safetensors"]).predict_proba(folder).shape == (6, 3)


def test_the_pixel_limit_is_the_callers_and_pils_own_check_uses_it(tmp_path):
    # A GIF whose screen says 4x4 while its frame is 300x300: PIL learns the size late, while
    # opening; its bomb check runs at the caller's limit, then the CLI's default limit applies again.
    frame = bytearray(encoded("GIF", 300))
    frame[6:10] = (4).to_bytes(2, "little") * 2
    with pytest.raises(ImageTooLarge, match="late.gif: image too large"):
        read_image(bytes(frame), "late.gif", max_pixels=10_000)
    assert read_image(bytes(frame), "late.gif").size == (300, 300)
