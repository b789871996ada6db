"""Hostile inputs through the real CLI: every one is a clear error, and nothing is lost or half-written.

Each case runs `ptflow ...` in its own child process (helpers/children.py) in an empty working
folder, with the hostile files in a shared inputs folder, and must end with: a non-zero exit
status, exactly one line on stderr, no traceback, nothing new in its working folder (no
temporary files, no run folders), and every existing input file byte for byte as it was.

    python -m pytest -q tests/test_hostile_cli.py
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import make_images
from helpers.children import run

GOOD = "model.safetensors"  # a good model, copied into the inputs folder by the fixture


def _npy(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """An .npy header declaring shape, with no data after it."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def _zip(entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _model_variant(good: Path, path: Path, state=None, **changes) -> None:
    """The good model file with its description changed (a key set to ... is removed)."""
    from safetensors.torch import load_file, save_file

    from ptflow.models.files import read_model_file

    _, meta = read_model_file(good)
    meta = {k: v for k, v in meta.items() if k not in ("path", "sha256")}
    for key, value in changes.items():
        if value is ...:
            meta.pop(key)
        else:
            meta[key] = value
    save_file(state if state is not None else load_file(good), path, metadata={"ptflow": json.dumps(meta)})


def build_inputs(root: Path, trained: dict) -> None:
    """Every hostile file the cases below name, in one folder."""
    import torch

    (root / "a_folder").mkdir()
    (root / "a_file").write_text("not a folder\n")
    # --- tables and arrays ---
    (root / "huge_cell.csv").write_text("a,b,label\n" + "1" * 200_000 + ",2,0\n")
    (root / "words.csv").write_text("a,b,label\n1,2,0\n3,four,1\n")
    (root / "ragged.csv").write_text("a,b,label\n1,2,0\n3,1\n")
    (root / "empty.csv").write_text("")
    (root / "latin1.csv").write_bytes("a,b,label\n1,2,caf\xe9\n".encode("latin-1"))
    (root / "infinite.csv").write_text("a,b,label\n1,inf,0\n2,3,1\n")
    (root / "header_only.csv").write_text("a,b,c\n")
    (root / "bomb.npz").write_bytes(_zip({"x.npy": _npy((100_000, 100_000, 100)), "y.npy": _npy((100_000,))}))
    (root / "garbage.npz").write_bytes(b"this is not a zip archive" * 10)
    (root / "objects.npz").write_bytes(_zip({"x.npy": _npy((3,), "|O"), "y.npy": _npy((3,))}))
    (root / "text_entry.npz").write_bytes(_zip({"x.npy": _npy((0,)), "notes.txt": b"hello"}))
    x, y = make_images(40, size=8)
    np.savez(root / "no_y.npz", x=x)
    np.savez(root / "mismatch.npz", x=x, y=y[:10])
    np.savez(root / "negative.npz", x=x, y=-y - 1)
    np.savez(root / "three.npz", x=x[:3], y=y[:3])
    np.savez(root / "float_images.npz", x=x[:, None].astype(np.float32), y=y)
    np.savez(root / "strings.npz", x=np.array(["a", "b"]))
    np.savez(root / "wrong_shape.npz", x=np.zeros((2, 5, 5), np.uint8))
    # --- IDX files ---
    bomb = root / "idx_bomb"
    bomb.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (bomb / stem).write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 60_000, 1000, 1000) + bytes(100))
    gz_bomb = root / "idx_gz_bomb"
    gz_bomb.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (gz_bomb / (stem + ".gz")).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 9, 9, 9)))
    # --- image folders and images ---
    from PIL import Image

    one = root / "one_class" / "only"
    one.mkdir(parents=True)
    Image.new("L", (8, 8)).save(one / "a.png")
    fake = root / "fake_images"
    for name in ("cat", "dog"):
        (fake / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(fake / name / "a.png")
    (fake / "dog" / "b.png").write_bytes(b"not a png at all")
    for name in ("cat", "dog"):
        (root / "no_images" / name).mkdir(parents=True)
        (root / "no_images" / name / "readme.txt").write_text("no images here")
    (root / "not_an_image.png").write_bytes(b"definitely not a png")
    # a real PNG whose header claims 100000 x 100000 pixels: refused from the header, before decoding
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR's width and height, then its CRC
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    (root / "bomb.png").write_bytes(bytes(png))
    # --- config files ---
    (root / "deep.yaml").write_text("model_args: " + "[" * 5000 + "]" * 5000 + "\n")
    (root / "deep.toml").write_text("model_args = {a = " + "[" * 5000 + "]" * 5000 + "}\n")
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (root / "laughs.yaml").write_text("\n".join(laughs) + "\nmodel_args: {x: *a8}\n")
    (root / "big.yaml").write_text("# padding\n" * 200_000)
    (root / "unknown.yaml").write_text("learning_rate: 0.1\n")
    (root / "wrong_type.yaml").write_text("lr: fast\n")
    (root / "malformed.yaml").write_text("lr: [1, 2\n")
    (root / "config.json").write_text("{}")
    (root / "folder.yaml").mkdir()
    (root / "latin1.yaml").write_bytes("dataset: caf\xe9\n".encode("latin-1"))
    # --- model files ---
    good = root / GOOD
    good.write_bytes(trained["safetensors"].read_bytes())
    data = good.read_bytes()
    (root / "empty.safetensors").write_bytes(b"")
    (root / "truncated.safetensors").write_bytes(data[:300])
    (root / "compressed.safetensors").write_bytes(gzip.compress(data))
    (root / "huge_header.safetensors").write_bytes((2 ** 62).to_bytes(8, "little") + b"{}")
    (root / "legacy.pth").write_bytes(b"\x80\x02}q\x00.")
    (root / "torchscript.pt").write_bytes(_zip({"m/data.pkl": b"x", "m/constants.pkl": b"x", "m/code/m.py": b""},
                                               zipfile.ZIP_STORED))
    (root / "zip_bomb.pth").write_bytes(_zip({"archive/data.pkl": bytes(50_000_000)}))
    (root / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(32))

    class Exploit:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"model": {}, "config": Exploit()}, root / "exploit.pth")
    _model_variant(good, root / "classes_int.safetensors", classes=5)
    _model_variant(good, root / "classes_short.safetensors", classes=["a", "b"])
    _model_variant(good, root / "classes_twice.safetensors", classes=["a", "a", "b"])
    _model_variant(good, root / "no_preprocessing.safetensors", preprocessing=...)
    _model_variant(good, root / "bad_scale.safetensors", preprocessing={"scale": "x"})
    _model_variant(good, root / "mean_length.safetensors", preprocessing={"scale": 1, "mean": [0, 0], "std": [1, 1]})
    _model_variant(good, root / "huge_input.safetensors", input_shape=[1, 100_000, 100_000])
    _model_variant(good, root / "bad_input.safetensors", input_shape="abc")
    _model_variant(good, root / "huge_layers.safetensors",
                   model_args={"input_size": 64, "output_size": 3, "hidden_sizes": [10 ** 9]})
    _model_variant(good, root / "unknown_args.safetensors", model_args={"width": 3})
    _model_variant(good, root / "import_path.safetensors", model="os:system")
    _model_variant(good, root / "newer.safetensors", format_version=99)
    _model_variant(good, root / "bad_config.safetensors", config={"dataset": 3})
    deep: list = []
    for _ in range(40):
        deep = [deep]
    _model_variant(good, root / "deep_meta.safetensors", extra=deep)
    _model_variant(good, root / "other_weights.safetensors", state={"w": torch.zeros(3)})
    # --- run folders ---
    hostile_run = root / "runs" / "hostile"
    hostile_run.mkdir(parents=True)
    (hostile_run / "config.json").write_text("[1, 2, 3]")
    foreign = root / "runs" / "foreign"
    foreign.mkdir(parents=True)
    (foreign / "config.json").write_text(json.dumps({"dataset": "digits", "lr": "fast"}))


D = "digits"  # the offline dataset: flag cases fail before any data is read anyway
CASES = {
    # flags: numbers
    "lr-nan": ["train", "--dataset", D, "--lr", "nan"],
    "lr-inf": ["train", "--dataset", D, "--lr", "inf"],
    "lr-negative": ["train", "--dataset", D, "--lr", "-1"],
    "dropout-over-1": ["train", "--dataset", D, "--dropout_p", "1.5"],
    "train-ratio-1": ["train", "--dataset", D, "--train_ratio", "1"],
    "test-ratio-nan": ["train", "--dataset", D, "--test_ratio", "nan"],
    "batch-size-0": ["train", "--dataset", D, "--batch_size", "0"],
    "batch-size-1-batchnorm": ["train", "--dataset", D, "--batch_size", "1"],
    "batch-size-text": ["train", "--dataset", D, "--batch_size", "abc"],
    "epochs-0": ["train", "--dataset", D, "--n_epochs", "0"],
    "epochs-huge": ["train", "--dataset", D, "--n_epochs", "100000000000"],
    "seed-negative": ["train", "--dataset", D, "--seed", "-1"],
    "seed-huge": ["train", "--dataset", D, "--seed", "99999999999999999999999"],
    "seed-float": ["train", "--dataset", D, "--seed", "1e3"],
    "layers-0": ["train", "--dataset", D, "--n_layers", "0"],
    "hidden-text": ["train", "--dataset", D, "--hidden_sizes", "10,x"],
    "hidden-0": ["train", "--dataset", D, "--hidden_sizes", "0"],
    "hidden-huge": ["train", "--dataset", D, "--hidden_sizes", "100000000000"],
    "channels-negative": ["train", "--dataset", D, "--model", "cnn", "--channels=-4"],
    "shift-9": ["train", "--dataset", D, "--augment_shift", "9"],
    "weight-decay-negative": ["train", "--dataset", D, "--weight_decay", "-1"],
    "verbose-5": ["train", "--dataset", D, "--verbose", "5"],
    "optimizer-unknown": ["train", "--dataset", D, "--optimizer", "rmsprop"],
    "model-unknown": ["train", "--dataset", D, "--model", "resnet"],
    "log-unknown": ["train", "--dataset", D, "--log", "wandb"],
    "mlflow-uri-alone": ["train", "--dataset", D, "--mlflow_uri", "sqlite:///x.db"],
    # flags: devices
    "device-cuda-abc": ["train", "--dataset", D, "--device", "cuda:abc"],
    "device-cuda-negative": ["train", "--dataset", D, "--device", "cuda:-1"],
    "device-gpu": ["train", "--dataset", D, "--device", "gpu"],
    "device-empty": ["train", "--dataset", D, "--device", ""],
    "gpu-id-huge": ["train", "--dataset", D, "--gpu_id", "99999999999"],
    "gpu-id-negative": ["train", "--dataset", D, "--gpu_id", "-5"],
    "evaluate-device": ["evaluate", "--model_fn", "{in}/" + GOOD, "--device", "cuda:x"],
    "predict-gpu-id": ["predict", "--model_fn", "{in}/" + GOOD, "--gpu_id", "-7", "{in}/wrong_shape.npz"],
    # flags: JSON and names
    "model-args-deep": ["train", "--dataset", D, "--model_args", "[" * 1000 + "]" * 1000],
    "model-args-malformed": ["train", "--dataset", D, "--model_args", '{"a": '],
    "model-args-list": ["train", "--dataset", D, "--model_args", "[1]"],
    "model-args-unknown": ["train", "--dataset", D, "--model_args", '{"width": 3}'],
    "dataset-unknown": ["train", "--dataset", "imagenet"],
    "dataset-import-missing": ["train", "--dataset", "no_such_pkg.data:load"],
    # output paths that collide
    "run-name-escapes": ["train", "--dataset", D, "--run_name", "../escaped"],
    "run-name-path": ["train", "--dataset", D, "--run_name", "a/b"],
    "model-fn-folder": ["train", "--dataset", D, "--model_fn", "{in}/a_folder"],
    "model-fn-under-file": ["train", "--dataset", D, "--model_fn", "{in}/a_file/model.pth"],
    "runs-dir-file": ["train", "--dataset", D, "--runs_dir", "{in}/a_file"],
    "evaluate-out-dir-file": ["evaluate", "--model_fn", "{in}/" + GOOD, "--out_dir", "{in}/a_file"],
    "export-out-folder": ["export", "--model_fn", "{in}/" + GOOD, "--format", "onnx", "-o", "{in}/a_folder"],
    "export-opset": ["export", "--model_fn", "{in}/" + GOOD, "--format", "onnx", "-o", "m.onnx", "--opset", "3"],
    "data-out-folder": ["data", D, "--out", "{in}/a_folder"],
    "compare-out-folder": ["runs", "compare", "x", "y", "-o", "{in}/a_folder"],
    # datasets of the wrong kind or shape
    "folder-is-file": ["train", "--dataset", "folder:{in}/a_file"],
    "csv-is-folder": ["train", "--dataset", "csv:{in}/a_folder"],
    "npz-is-folder": ["train", "--dataset", "npz:{in}/a_folder"],
    "npz-missing": ["train", "--dataset", "npz:{in}/absent.npz"],
    "csv-huge-cell": ["train", "--dataset", "csv:{in}/huge_cell.csv"],
    "csv-words": ["train", "--dataset", "csv:{in}/words.csv"],
    "csv-ragged": ["train", "--dataset", "csv:{in}/ragged.csv"],
    "csv-empty": ["train", "--dataset", "csv:{in}/empty.csv"],
    "csv-latin1": ["train", "--dataset", "csv:{in}/latin1.csv"],
    "csv-infinite": ["train", "--dataset", "csv:{in}/infinite.csv"],
    "csv-no-rows": ["train", "--dataset", "csv:{in}/header_only.csv"],
    "csv-target-unknown": ["train", "--dataset", "csv:{in}/words.csv", "--target", "nosuch"],
    "npz-bomb": ["train", "--dataset", "npz:{in}/bomb.npz"],
    "npz-not-zip": ["train", "--dataset", "npz:{in}/garbage.npz"],
    "npz-objects": ["train", "--dataset", "npz:{in}/objects.npz"],
    "npz-text-entry": ["train", "--dataset", "npz:{in}/text_entry.npz"],
    "npz-no-y": ["train", "--dataset", "npz:{in}/no_y.npz"],
    "npz-length-mismatch": ["train", "--dataset", "npz:{in}/mismatch.npz"],
    "npz-negative-labels": ["train", "--dataset", "npz:{in}/negative.npz"],
    "npz-too-small": ["train", "--dataset", "npz:{in}/three.npz"],
    "npz-float-images": ["train", "--dataset", "npz:{in}/float_images.npz"],
    "idx-bomb": ["train", "--dataset", "mnist", "--data_dir", "{in}/idx_bomb"],
    "idx-gzip-bomb": ["train", "--dataset", "mnist", "--data_dir", "{in}/idx_gz_bomb"],
    "folder-one-class": ["train", "--dataset", "folder:{in}/one_class"],
    "folder-broken-image": ["train", "--dataset", "folder:{in}/fake_images"],
    "folder-no-images": ["train", "--dataset", "folder:{in}/no_images"],
    # config files
    "config-deep-yaml": ["train", "--config", "{in}/deep.yaml"],
    "config-deep-toml": ["train", "--config", "{in}/deep.toml"],
    "config-billion-laughs": ["train", "--config", "{in}/laughs.yaml"],
    "config-too-big": ["train", "--config", "{in}/big.yaml"],
    "config-unknown-key": ["train", "--config", "{in}/unknown.yaml"],
    "config-wrong-type": ["train", "--config", "{in}/wrong_type.yaml"],
    "config-malformed": ["train", "--config", "{in}/malformed.yaml"],
    "config-json": ["train", "--config", "{in}/config.json"],
    "config-folder": ["train", "--config", "{in}/folder.yaml"],
    "config-latin1": ["train", "--config", "{in}/latin1.yaml"],
    "config-missing": ["train", "--config", "{in}/absent.yaml"],
    # model files
    "model-missing": ["evaluate", "--model_fn", "{in}/absent.safetensors"],
    "model-folder": ["evaluate", "--model_fn", "{in}/a_folder"],
    "model-device-file": ["evaluate", "--model_fn", "/dev/zero"],  # never ends: refused, not read
    "model-empty": ["predict", "--model_fn", "{in}/empty.safetensors", "{in}/wrong_shape.npz"],
    "model-truncated": ["evaluate", "--model_fn", "{in}/truncated.safetensors"],
    "model-gzip": ["evaluate", "--model_fn", "{in}/compressed.safetensors"],
    "model-huge-header": ["evaluate", "--model_fn", "{in}/huge_header.safetensors"],
    "model-legacy-pickle": ["evaluate", "--model_fn", "{in}/legacy.pth"],
    "model-torchscript": ["evaluate", "--model_fn", "{in}/torchscript.pt"],
    "model-zip-bomb": ["evaluate", "--model_fn", "{in}/zip_bomb.pth"],
    "model-onnx": ["evaluate", "--model_fn", "{in}/model.onnx"],
    "model-exploit": ["evaluate", "--model_fn", "{in}/exploit.pth"],
    "model-classes-int": ["evaluate", "--model_fn", "{in}/classes_int.safetensors"],
    "model-classes-short": ["evaluate", "--model_fn", "{in}/classes_short.safetensors"],
    "model-classes-twice": ["evaluate", "--model_fn", "{in}/classes_twice.safetensors"],
    "model-no-preprocessing": ["evaluate", "--model_fn", "{in}/no_preprocessing.safetensors"],
    "model-bad-scale": ["evaluate", "--model_fn", "{in}/bad_scale.safetensors"],
    "model-mean-length": ["evaluate", "--model_fn", "{in}/mean_length.safetensors"],
    "model-huge-input": ["evaluate", "--model_fn", "{in}/huge_input.safetensors"],
    "model-bad-input": ["evaluate", "--model_fn", "{in}/bad_input.safetensors"],
    "model-huge-layers": ["evaluate", "--model_fn", "{in}/huge_layers.safetensors"],
    "model-unknown-args": ["evaluate", "--model_fn", "{in}/unknown_args.safetensors"],
    "model-import-path": ["evaluate", "--model_fn", "{in}/import_path.safetensors"],
    "model-newer-format": ["evaluate", "--model_fn", "{in}/newer.safetensors"],
    "model-bad-config": ["evaluate", "--model_fn", "{in}/bad_config.safetensors"],
    "model-deep-description": ["evaluate", "--model_fn", "{in}/deep_meta.safetensors"],
    "model-other-weights": ["evaluate", "--model_fn", "{in}/other_weights.safetensors"],
    "export-bad-model": ["export", "--model_fn", "{in}/classes_short.safetensors", "--format", "onnx",
                         "-o", "m.onnx"],
    "serve-bad-model": ["serve", "--model_fn", "{in}/huge_layers.safetensors", "--port", "0"],
    # prediction inputs
    "predict-not-image": ["predict", "--model_fn", "{in}/" + GOOD, "{in}/not_an_image.png"],
    "predict-image-bomb": ["predict", "--model_fn", "{in}/" + GOOD, "{in}/bomb.png"],
    "predict-wrong-shape": ["predict", "--model_fn", "{in}/" + GOOD, "{in}/wrong_shape.npz"],
    "predict-strings": ["predict", "--model_fn", "{in}/" + GOOD, "{in}/strings.npz"],
    "predict-csv-words": ["predict", "--model_fn", "{in}/" + GOOD, "{in}/words.csv"],
    "predict-npz-bomb": ["predict", "--model_fn", "{in}/" + GOOD, "{in}/bomb.npz"],
    "predict-missing": ["predict", "--model_fn", "{in}/" + GOOD, "{in}/absent.png"],
    "evaluate-batch-0": ["evaluate", "--model_fn", "{in}/" + GOOD, "--batch_size", "0"],
    # run folders
    "resume-unknown": ["train", "--resume", "nosuch", "--runs_dir", "{in}/runs"],
    "resume-hostile-config": ["train", "--resume", "{in}/runs/hostile"],
    "resume-foreign-config": ["train", "--resume", "{in}/runs/foreign"],
    "runs-show-unknown": ["runs", "show", "nosuch", "--runs_dir", "{in}/runs"],
    "report-unknown": ["report", "nosuch", "--runs_dir", "{in}/runs"],
}


# What some errors must say, where the reason could otherwise hide behind a generic message.
EXPECTED = {
    "predict-image-bomb": "pixels", "npz-bomb": "declares", "idx-bomb": "declares", "model-zip-bomb": "compressed",
    "model-huge-layers": "parameters", "hidden-huge": "parameters", "model-huge-header": "declares",
    "model-classes-short": "names 2 classes", "model-exploit": "refused", "run-name-escapes": "not a path",
    "config-billion-laughs": "values", "csv-huge-cell": "line 2",
}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, trained):
    """Every case run once (a few at a time), with the inputs folder's state before and after."""
    inputs = tmp_path_factory.mktemp("inputs")
    build_inputs(inputs, trained)
    before = snapshot(inputs)
    work = tmp_path_factory.mktemp("work")

    def one(name):
        args = [a.replace("{in}", str(inputs)) for a in CASES[name]]
        return name, run(args, work / name, env={"XDG_CACHE_HOME": str(work / name / ".cache")}, timeout=120)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(pool.map(one, CASES))
    return {"results": results, "work": work, "inputs": inputs, "before": before, "after": snapshot(inputs)}


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", CASES)
def test_hostile_input_is_one_clear_line(outcomes, name):
    result = outcomes["results"][name]
    assert result.code not in (0, None) and result.code > 0, (result.code, result.err)
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], result.err
    assert "code ran" not in result.out
    if name in EXPECTED:
        assert EXPECTED[name] in lines[0], lines[0]
    left = [str(p.relative_to(outcomes["work"] / name)) for p in (outcomes["work"] / name).rglob("*")
            if ".cache" not in p.parts]
    assert not left, f"{name} wrote {left}"


def test_existing_files_are_untouched(outcomes):
    assert outcomes["after"] == outcomes["before"]
    assert not [p for p in outcomes["inputs"].rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]
