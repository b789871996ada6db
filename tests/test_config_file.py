"""Config files: YAML or TOML under the flags, `--print_config` round trips, clear errors."""

import json

import pytest
from helpers import assert_one_line_error

from ptflow.cli import configfile
from ptflow.config import TrainConfig


def printed(cli, *args, kind: str | None = None) -> str:
    code, out, err = cli("train", *args, "--print_config", *([kind] if kind else []))
    assert code == 0, err
    return out


def test_file_values_sit_under_the_flags(cli, tmp_path):
    path = tmp_path / "exp.yaml"
    # hyphenated keys, YAML 1.1's string "1e-3", a list, and a comma string for a list
    path.write_text("dataset: digits\nn-layers: 3\nlr: 1e-3\nhidden_sizes: [40, 20]\nchannels: '8,16'\n"
                    "batch_size: 64\nuse_dropout: true\n")
    values = configfile.read(str(path))
    assert values == {"dataset": "digits", "n_layers": 3, "lr": 0.001, "hidden_sizes": [40, 20],
                      "channels": [8, 16], "batch_size": 64, "use_dropout": True}
    out = printed(cli, "--config", path, "--batch_size", "32")
    (tmp_path / "resolved.yaml").write_text(out)
    resolved = configfile.read(str(tmp_path / "resolved.yaml"))
    assert resolved["batch_size"] == 32  # the flag wins
    assert resolved["lr"] == 0.001 and resolved["n_layers"] == 3 and resolved["hidden_sizes"] == [40, 20]
    assert resolved["optimizer"] == "adam"  # a default fills what neither gave


@pytest.mark.parametrize("kind", ["yaml", "toml"])
def test_print_config_round_trips(cli, tmp_path, kind):
    args = ["--dataset", "digits", "--lr", "3e-05", "--hidden_sizes", "30,20", "--use_dropout", "--scheduler",
            "onecycle", "--weight_decay", "1e-4", "--target", "label", "--log", "tensorboard"]
    first = printed(cli, *args, kind=kind)
    path = tmp_path / f"config.{kind}"
    path.write_text(first)
    again = printed(cli, "--config", path)  # the file's suffix picks the format
    assert again == first
    expected = TrainConfig.from_dict({"dataset": "digits", "lr": 3e-05, "hidden_sizes": [30, 20],
                                      "use_dropout": True, "scheduler": "onecycle", "weight_decay": 1e-4,
                                      "target": "label", "log": ["tensorboard"]})
    assert TrainConfig.from_dict(configfile.read(str(path))) == expected


def test_a_printed_config_reproduces_the_run(cli, tmp_path, npz_data):
    args = ["--dataset", f"npz:{npz_data}", "--n_epochs", "3", "--batch_size", "32", "--use_dropout",
            "--lr", "0.003", "--runs_dir", tmp_path, "--verbose", "0"]
    code, _, err = cli("train", *args, "--run_name", "flags")
    assert code == 0, err
    (tmp_path / "run.toml").write_text(printed(cli, *args, kind="toml"))
    code, _, err = cli("train", "--config", tmp_path / "run.toml", "--run_name", "file")
    assert code == 0, err
    runs = [tmp_path / name for name in ("flags", "file")]
    metrics = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (run / "metrics.jsonl").read_text().splitlines()] for run in runs]
    assert metrics[0] == metrics[1] and len(metrics[0]) == 3
    configs = [json.loads((run / "config.json").read_text()) for run in runs]
    assert {**configs[0], "run_name": None} == {**configs[1], "run_name": None}
    a, b = (json.loads((run / "run.json").read_text()) for run in runs)
    assert a["test_acc"] == b["test_acc"] and a["best_valid_loss"] == b["best_valid_loss"]


@pytest.mark.parametrize("name, text, code, message", [
    ("bad.yaml", "lr: [1, 2\n", 2, "malformed YAML at line 2"),
    ("bad.toml", "lr = = 1\n", 2, "malformed TOML"),
    ("unknown.yaml", "lr: 0.1\nlearning_rate: 0.1\n", 2, "unknown config key(s): learning_rate"),
    ("type.yaml", "lr: fast\n", 2, "lr must be a number, got 'fast'"),
    ("int.toml", "n_layers = 2.5\n", 2, "n_layers must be an integer, got 2.5"),
    ("bool.yaml", "use_dropout: maybe\n", 2, "use_dropout must be true or false"),
    ("list.yaml", "hidden_sizes: [10, x]\n", 2, "hidden_sizes must be a list of integers"),
    ("scalar.yaml", "just a string\n", 2, "expected a mapping"),
    ("invalid.yaml", "n_layers: 0\n", 2, "--n_layers must be >= 1"),
    ("config.json", "{}", 2, "must end in .yaml, .yml or .toml"),
])
def test_bad_config_files(cli, tmp_path, name, text, code, message):
    path = tmp_path / name
    path.write_text(text)
    got, _, err = cli("train", "--config", path, "--runs_dir", tmp_path / "runs")
    assert got == code and message in err, err
    assert_one_line_error(err)
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_missing_config_file(cli, tmp_path):
    code, _, err = cli("train", "--config", tmp_path / "absent.yaml")
    assert code == 1 and "cannot read config file" in err
    assert_one_line_error(err)


def test_print_config_takes_only_yaml_or_toml(cli):
    code, _, err = cli("train", "--dataset", "digits", "--print_config", "xml")
    assert code == 2 and "yaml or toml" in err


@pytest.mark.parametrize("value", [1e-05, 0.1, 3.0, 1e20, float("inf")])
def test_floats_are_written_as_floats_in_both_formats(tmp_path, value):
    for kind in ("yaml", "toml"):
        path = tmp_path / f"c.{kind}"
        path.write_text(configfile.dump({"lr": value}, kind))
        assert configfile.read(str(path)) == {"lr": value}
