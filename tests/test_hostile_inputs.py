"""Hostile or mistaken inputs to `ptflow train`: array files, plugins, dataset functions, --model_args.

Each is one line and a non-zero exit before training starts (no run folder is created), and
nothing in a file is ever unpickled. The references: a marker file that unpickling would
create, plugin modules that raise every kind of exception while imported, and the data's own
input shape and class count, which a model built from --model_args must fit.

    python -m pytest -q tests/test_hostile_inputs.py
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch
from helpers import assert_one_line

from ptflow.data.sources import load_raw
from ptflow.errors import UsageError


def assert_refused(result, code: int, *words: str) -> None:
    """(exit status, stdout, stderr) of a run that must stop with one line holding every word."""
    status, _, err = result
    assert status == code, err
    assert_one_line(err, *words)


@pytest.fixture
def train(cli, tmp_path):
    """`ptflow train --dataset D ...` for one epoch; asserts afterwards that no run was started."""
    runs = tmp_path / "runs"

    def _train(dataset, *flags):
        return cli("train", "--dataset", dataset, *flags, "--n_epochs", "1", "--batch_size", "16",
                   "--runs_dir", runs, "--verbose", "0")

    yield _train
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was created"


@pytest.fixture
def code(tmp_path, monkeypatch):
    """write(module, source): a module of the user's own, importable by that name for this test."""
    folder = tmp_path / "code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    written = []

    def write(module: str, source: str) -> None:
        (folder / f"{module}.py").write_text(source)
        importlib.invalidate_caches()
        written.append(module)

    yield write
    for module in written:
        sys.modules.pop(module, None)


def images(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), np.arange(n) % 2


# --- array files ----------------------------------------------------------------------------

X, Y = images()
ARRAYS = {  # name: (arrays, words of the error)
    "0-d x": ({"x": np.array(5), "y": Y}, "array x must be (N, F), (N, H, W) or (N, C, H, W), got shape ()"),
    "0-d y": ({"x": X, "y": np.array(1)}, "array y must be (N,), got shape ()"),
    "0-d classes": ({"x": X, "y": Y, "classes": np.array("a")}, "array classes must be (K,), got shape ()"),
    "0-d x_test": ({"x": X, "y": Y, "x_test": np.array(1), "y_test": np.array([1])}, "array x_test must be"),
    "2-d classes": ({"x": X, "y": Y, "classes": np.array([["a", "b"]])}, "array classes must be (K,)"),
    "5-d x": ({"x": X.reshape(40, 1, 1, 8, 8), "y": Y}, "array x must be (N, F), (N, H, W) or (N, C, H, W), "
                                                        "got shape (40, 1, 1, 8, 8)"),
    "empty examples": ({"x": np.zeros((40, 0), np.float32), "y": Y}, "array x has shape (40, 0): its examples are "
                                                                     "empty"),
    "complex x": ({"x": np.ones((40, 3), np.complex64), "y": Y}, "array x holds complex64 values"),
    "dates": ({"x": np.zeros((40, 3), "datetime64[s]"), "y": Y}, "array x holds datetime64[s] values"),
    "text x": ({"x": np.full((40, 3), "a"), "y": Y}, "array x holds <U1 values; expected numbers"),
    "records": ({"x": np.zeros(40, [("a", "f4"), ("b", "f4")]), "y": Y}, "array x holds structured values"),
    "2-d y": ({"x": X, "y": Y[:, None]}, "array y must be (N,), got shape (40, 1)"),
}


@pytest.mark.parametrize("case", sorted(ARRAYS))
def test_arrays_of_the_wrong_rank_or_dtype_are_refused_before_training(train, tmp_path, case):
    arrays, words = ARRAYS[case]
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    assert_refused(train(f"npz:{path}"), 1, f"{path}: {words}")


class Unpickled:
    """Creates the marker file when unpickled: the proof that a file's pickle ran."""

    marker = ""

    def __reduce__(self):
        return open, (self.marker, "w")


def test_object_arrays_are_never_unpickled(cli, train, tmp_path, trained):
    Unpickled.marker = str(tmp_path / "unpickled")
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([Unpickled()] * 40, dtype=object), y=Y)
    with np.load(path, allow_pickle=True) as archive:  # the reference: numpy would run it if asked
        archive["x"]
    assert (tmp_path / "unpickled").exists()
    (tmp_path / "unpickled").unlink()
    assert_refused(train(f"npz:{path}"), 1, "x.npy: holds Python objects, which ptflow never unpickles")
    assert_refused(cli("predict", "--model_fn", trained["safetensors"], path), 1, "never unpickles")
    assert not (tmp_path / "unpickled").exists()


def test_a_plugins_arrays_meet_the_same_rules(train, code):
    code("bad_arrays", "import numpy as np\n"
                       "def objects():\n    return {'x': np.array([object()] * 40), 'y': np.arange(40) % 2}\n"
                       "def scalar():\n    return {'x': 1.0, 'y': np.arange(40) % 2}\n")
    assert_refused(train("bad_arrays:objects"), 1, "bad_arrays:objects: array x holds object values")
    assert_refused(train("bad_arrays:scalar"), 1, "bad_arrays:scalar: array x must be")


def test_a_0d_array_to_predict_is_one_line(cli, tmp_path, trained):
    path = tmp_path / "one.npz"
    np.savez(path, x=np.array(3.0))
    assert_refused(cli("predict", "--model_fn", trained["safetensors"], path), 1, "does not fit the model's input")


# --- plugins that fail while imported -------------------------------------------------------

RAISES = {  # module source: words of the error
    "raise RuntimeError('needs a GPU')\n": "RuntimeError: needs a GPU",
    "def broken(:\n    pass\n": "SyntaxError: invalid syntax",
    "import sys\nsys.exit(3)\n": "it called sys.exit(3)",
    "1 / 0\n": "ZeroDivisionError: division by zero",
    "import no_such_dependency_here\n": "cannot import",
    "raise SystemExit\n": "it called sys.exit(None)",
}


@pytest.mark.parametrize("number, source", list(enumerate(RAISES)))
@pytest.mark.parametrize("what", ["--model", "--dataset"])
def test_a_plugin_whose_import_raises_anything_is_one_line(train, code, npz_data, what, number, source):
    module = f"failing_plugin_{number}"
    code(module, source)
    flags = ["--model", f"{module}:Net"] if what == "--model" else []
    dataset = f"{module}:load" if what == "--dataset" else f"npz:{npz_data}"
    kind = "model" if what == "--model" else "dataset"
    assert_refused(train(dataset, *flags), 1, f"{kind} '{module}:", RAISES[source])


def test_an_entry_point_whose_import_raises_is_one_line(train, code, tmp_path, npz_data):
    code("failing_entry", "raise RuntimeError('half-installed')\n")
    info = tmp_path / "code" / "failing_entry-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: failing-entry\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ptflow.models]\nfailnet = failing_entry:Net\n"
                                           "[ptflow.datasets]\nfaildata = failing_entry:load\n")
    words = "importing failing_entry (from package failing-entry 0.1) failed: RuntimeError: half-installed"
    assert_refused(train(f"npz:{npz_data}", "--model", "failnet"), 1, "model 'failnet'", words)
    assert_refused(train("faildata"), 1, "dataset 'faildata'", words)


def test_ctrl_c_while_a_plugin_is_imported_still_interrupts(train, code, npz_data):
    code("interrupted_plugin", "raise KeyboardInterrupt\n")
    status, _, err = train(f"npz:{npz_data}", "--model", "interrupted_plugin:Net")
    assert status == 130 and err.strip() == "ptflow train: interrupted"


# --- dataset functions ----------------------------------------------------------------------

DATASETS = '''
import numpy as np
calls = []

def _arrays():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    return {"x": (rng.standard_normal((60, 4)) + y[:, None]).astype("float32"), "y": y}

def keyword_only(*, root):
    calls.append(root)
    return _arrays()

def two_required(data_dir, split):
    calls.append(split)
    return _arrays()

def no_arguments():
    calls.append(None)
    return _arrays()

def folder(data_dir):
    calls.append(data_dir)
    return _arrays()

def folder_and_options(data_dir=None, *, seed=0):
    calls.append(data_dir)
    return _arrays()

def anything(*args, **kwargs):
    calls.append(args)
    return _arrays()

def raises():
    return {}["x"]

def exits():
    raise SystemExit(1)
'''


@pytest.mark.parametrize("function, words", [("keyword_only", "requires parameter(s) root"),
                                             ("two_required", "requires parameter(s) split")])
def test_a_dataset_function_ptflow_cannot_call_is_refused_uncalled(train, code, function, words):
    code("user_datasets", DATASETS)
    assert_refused(train(f"user_datasets:{function}"), 2, f"dataset 'user_datasets:{function}'", words,
                   "takes no arguments, or one: the data folder (--data_dir)")
    assert sys.modules["user_datasets"].calls == []


def test_the_dataset_functions_ptflow_can_call_get_the_data_folder_if_they_take_one(code):
    code("user_datasets", DATASETS)
    expected = {"no_arguments": None, "folder": "D", "folder_and_options": "D", "anything": ("D",)}
    for function, received in expected.items():
        raw = load_raw(f"user_datasets:{function}", data_dir="D")
        assert raw.x.shape == (60, 4) and sys.modules["user_datasets"].calls[-1] == received, function


@pytest.mark.parametrize("function, words", [("raises", "loading it failed: KeyError: 'x'"),
                                             ("exits", "loading it failed: it called sys.exit(1)")])
def test_a_dataset_function_that_fails_is_one_line(train, code, function, words):
    code("user_datasets", DATASETS)
    assert_refused(train(f"user_datasets:{function}"), 1, f"dataset 'user_datasets:{function}'", words)


# --- --model_args that contradict the data --------------------------------------------------

NETS = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, input_shape, n_classes, hidden=8):
        super().__init__()
        size = 1
        for s in input_shape:
            size *= s
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.net(x)

class Pair(Net):
    def forward(self, x):
        return self.net(x), x

class KeyNet(Net):
    def __init__(self, input_shape, n_classes):
        raise KeyError("width")
'''


@pytest.mark.parametrize("model, model_args, words", [
    ("mlp", '{"input_size": 10}', "does not fit the data (inputs (1, 8, 8), 3 classes): RuntimeError: mat1"),
    ("mlp", '{"output_size": 5}', "returns scores of shape (2, 5) for 2 examples"),
    ("mlp", '{"output_size": 2}', "needs (2, 3): one score per class"),
    ("cnn", '{"input_shape": [1, 28, 28]}', "does not fit the data (inputs (1, 8, 8), 3 classes)"),
    ("cnn", '{"output_size": 7}', "returns scores of shape (2, 7)"),
    ("user_nets:Net", '{"n_classes": 7}', "returns scores of shape (2, 7)"),
    ("user_nets:Net", '{"input_shape": [3, 8, 8]}', "does not fit the data"),
])
def test_model_args_that_contradict_the_data_fail_before_training(train, code, npz_data, model, model_args,
                                                                     words):
    code("user_nets", NETS)
    assert_refused(train(f"npz:{npz_data}", "--model", model, "--model_args", model_args), 2,
                   f"model '{model}' with --model_args {model_args}", words)


@pytest.mark.parametrize("model, words", [("user_nets:Pair", "returns tuple, not a tensor of class scores"),
                                          ("user_nets:KeyNet", "cannot be built with arguments "
                                                               "['input_shape', 'n_classes']: KeyError: 'width'")])
def test_a_model_that_cannot_train_on_the_data_fails_before_training(train, code, npz_data, model, words):
    code("user_nets", NETS)
    assert_refused(train(f"npz:{npz_data}", "--model", model), 2, f"model '{model}'", words)


class Noisy(torch.nn.Module):
    """BatchNorm, and random numbers drawn in every forward pass, even in eval mode."""

    def __init__(self):
        super().__init__()
        self.norm, self.linear = torch.nn.BatchNorm1d(64), torch.nn.Linear(64, 3)

    def forward(self, x):
        return self.linear(self.norm(x)) + 0 * torch.rand(len(x), 3)


def test_the_check_changes_nothing_the_run_depends_on():
    # The reference: the same weights, statistics, mode and random state as without the check,
    # so runs (and their exact resumes) are what they were.
    from ptflow.models.mlp import MLP
    from ptflow.models.registry import check_fits

    torch.manual_seed(0)
    model, x = Noisy(), torch.randn(2, 64) * 5 + 3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    check_fits(model, x, 3, "noisy", {})
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    with pytest.raises(UsageError, match=r"--model_args \{\"output_size\": 4\} returns scores of shape \(2, 4\)"):
        check_fits(MLP(64, 4, [8]), x, 3, "mlp", {"output_size": 4})
