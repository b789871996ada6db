"""Adding a network or a dataset format is one file, registered by one entry in its registry.

Each test writes that one file into a package of its own (outside ptflow), registers the object
it declares, and checks that everything that lists or reads networks and formats sees it: the
train flags build it, the one-example-batch rule asks it, the name lists and reports know it,
`ptflow predict` reads its files. Nothing else in ptflow is edited.
"""

import json
import textwrap

import numpy as np
import pytest

from ptflow.config import TrainConfig
from ptflow.data import registry as datasets
from ptflow.errors import UsageError
from ptflow.models import registry as models
from ptflow.models.files import read_model_file

TOY_MODEL = '''
    """A one-hidden-layer network whose width is --hidden_sizes' first entry (no BatchNorm)."""
    import math

    import torch.nn as nn

    from ptflow.models.registry import BuiltinModel


    class Toy(nn.Module):
        def __init__(self, input_size, output_size, width, dropout_p):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(input_size, width), nn.ReLU(), nn.Dropout(dropout_p),
                                     nn.Linear(width, output_size))

        def forward(self, x):
            return self.net(x)


    def toy_args(input_shape, n_classes, *, hidden_sizes, dropout_p):
        return {"input_size": math.prod(input_shape), "output_size": n_classes,
                "width": (hidden_sizes or [16])[0], "dropout_p": dropout_p}


    MODEL = BuiltinModel(Toy, toy_args)
'''

TOY_FORMAT = '''
    """toyfmt:PATH, rows of space-separated numbers: the label, then the features (predict: features only)."""
    import numpy as np

    from ptflow.data.formats import Format


    def load(path, target):
        from ptflow.data.sources import from_arrays

        table = np.loadtxt(path, dtype=np.float32, ndmin=2)
        return from_arrays(str(path), {"x": table[:, 1:], "y": table[:, 0].astype(np.int64)})


    def read_inputs(path):
        return np.loadtxt(path, dtype=np.float32, ndmin=2)


    FORMAT = Format("toyfmt", "rows of numbers, the label first", load, suffixes=(".toy",), read_inputs=read_inputs)
'''


@pytest.fixture
def toyzoo(tmp_path, monkeypatch):
    """A package outside ptflow holding one file per addition, each registered by one entry."""
    package = tmp_path / "toyzoo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "toy.py").write_text(textwrap.dedent(TOY_MODEL))
    (package / "toyfmt.py").write_text(textwrap.dedent(TOY_FORMAT))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(models.BUILTIN, "toy", "toyzoo.toy:MODEL")
    from toyzoo import toyfmt

    monkeypatch.setitem(datasets.FORMATS, "toyfmt", toyfmt.FORMAT)
    return package


def features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable rows: the label is whether the first feature is positive."""
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def test_a_network_in_one_file_is_built_from_its_train_flags(toyzoo, cli, tmp_path):
    x, y = features(64)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    code, _, err = cli("train", "--dataset", f"npz:{tmp_path / 'data.npz'}", "--model", "toy", "--hidden_sizes", "7",
                       "--dropout_p", "0.1", "--n_epochs", "1", "--batch_size", "16", "--device", "cpu",
                       "--verbose", "0", "--runs_dir", tmp_path / "runs", "--run_name", "toy")
    assert code == 0, err
    _, meta = read_model_file(tmp_path / "runs" / "toy" / "model.safetensors")
    assert meta["model"] == "toy"
    assert meta["model_args"] == {"input_size": 4, "output_size": 2, "width": 7, "dropout_p": 0.1}


def test_every_list_and_rule_of_networks_asks_its_declaration(toyzoo):
    assert models.train_flags("toy") == {"hidden_sizes", "dropout_p"}  # a report shows a toy run these
    assert models.flags_not_used_by("toy") == models.model_flags() - {"hidden_sizes", "dropout_p"} != set()
    # BatchNorm cannot learn from one example: the mlp has it, the toy does not, as each declares
    assert TrainConfig.from_dict({"model": "toy", "batch_size": 1}).batch_size == 1
    with pytest.raises(UsageError, match="BatchNorm.*--model mlp without --use_dropout"):
        TrainConfig.from_dict({"model": "mlp", "batch_size": 1})
    with pytest.raises(UsageError, match="expected one of mlp, cnn, toy"):  # the names an unknown model is offered
        models.source("nonesuch")


def test_a_format_in_one_file_trains_and_predicts(toyzoo, cli, tmp_path):
    x, y = features(64)
    np.savetxt(tmp_path / "points.txt", np.column_stack([y, x]))
    code, _, err = cli("train", "--dataset", f"toyfmt:{tmp_path / 'points.txt'}", "--n_epochs", "2",
                       "--batch_size", "16", "--device", "cpu", "--verbose", "0", "--runs_dir", tmp_path / "runs")
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert "points" in run.name  # named after the file, as csv:PATH runs are
    model = run / "model.safetensors"
    # Reference: the same rows given as a .csv, which ptflow reads itself, get the same answers.
    rows, _ = features(5, seed=1)
    np.savetxt(tmp_path / "new.toy", rows)
    np.savetxt(tmp_path / "new.csv", rows, delimiter=",")
    answers = []
    for name in ("new.toy", "new.csv"):
        code, out, err = cli("predict", "--model_fn", model, tmp_path / name, "--format", "json")
        assert code == 0, err
        answers.append([{k: v for k, v in row.items() if k != "input"} for row in json.loads(out)])
    assert len(answers[0]) == 5 and answers[0] == answers[1]


def test_every_list_of_datasets_reads_the_format_registry(toyzoo, cli, tmp_path):
    assert datasets.is_format("toyfmt:x.txt") and not datasets.is_format("toyfmt")
    assert "toyfmt:PATH (rows of numbers, the label first)" in datasets.formats_help()
    code, _, err = cli("train", "--dataset", "nonesuch", "--runs_dir", tmp_path)
    assert code == 2 and "toyfmt:PATH" in err  # the names an unknown dataset is offered
