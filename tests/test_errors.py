"""Every user error: one line on stderr, exit status 2 (usage) or 1 (runtime), no traceback."""

import json

import pytest
from helpers import assert_one_line_error


@pytest.mark.parametrize("flag, value", [
    ("--n_layers", "0"), ("--dropout_p", "1.0"), ("--dropout_p", "-0.1"), ("--train_ratio", "1"),
    ("--train_ratio", "0"), ("--batch_size", "0"), ("--lr", "0"), ("--lr", "-1"), ("--n_epochs", "0"),
    ("--model", "resnet"), ("--optimizer", "rmsprop"), ("--hidden_sizes", "10,x"), ("--batch_size", "abc"),
    ("--batch_size", "1"),  # BatchNorm cannot train on one example
])
def test_bad_hyperparameters_exit_2(cli, flag, value, tmp_path):
    code, out, err = cli("train", "--dataset", "digits", flag, value, "--runs_dir", tmp_path)
    assert code == 2
    assert_one_line_error(err)
    assert not list(tmp_path.iterdir())  # nothing written


def test_unknown_dataset_exits_2(cli, tmp_path):
    code, _, err = cli("train", "--dataset", "imagenet", "--runs_dir", tmp_path)
    assert code == 2 and "unknown dataset" in err
    assert_one_line_error(err)


def test_missing_dataset_files_say_where_they_were_looked_for(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PTFLOW_DATA_DIR", raising=False)
    monkeypatch.setattr("ptflow.data.idx._fetch", lambda *a: (_ for _ in ()).throw(OSError("network unreachable")))
    code, _, err = cli("train", "--dataset", "kmnist", "--data_dir", tmp_path / "nowhere", "--runs_dir", tmp_path)
    assert code == 1
    assert_one_line_error(err)
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "nowhere") in err and "--data_dir" in err


def test_cuda_absent_is_a_runtime_error(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli("train", "--dataset", "digits", "--device", "cuda", "--runs_dir", tmp_path)
    assert code == 1 and "CUDA" in err
    assert_one_line_error(err)


def test_missing_and_corrupt_model_files(cli, tmp_path, trained):
    code, _, err = cli("evaluate", "--model_fn", tmp_path / "absent.safetensors")
    assert code == 1
    assert_one_line_error(err)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(trained["safetensors"].read_bytes()[:300])
    code, _, err = cli("evaluate", "--model_fn", corrupt)
    assert code == 1 and "corrupt" in err
    assert_one_line_error(err)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(trained["pth"].read_bytes()[:-100])
    code, _, err = cli("predict", "--model_fn", truncated)
    assert code == 1
    assert_one_line_error(err)


def test_a_model_file_from_a_newer_format_asks_for_an_upgrade(cli, tmp_path, trained):
    from safetensors.torch import load_file, save_file

    from ptflow.models.files import FORMAT_VERSION, read_model_file

    _, meta = read_model_file(trained["safetensors"])
    meta = {k: v for k, v in meta.items() if k not in ("path", "sha256")}
    meta["format_version"] = FORMAT_VERSION + 1
    meta["versions"]["ptflow"] = "9.0.0"
    newer = tmp_path / "newer.safetensors"
    save_file(load_file(trained["safetensors"]), newer, metadata={"ptflow": json.dumps(meta)})
    code, _, err = cli("evaluate", "--model_fn", newer)
    assert code == 1 and "ptflow 9.0.0" in err and "upgrade ptflow" in err
    assert_one_line_error(err)


class Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickle_that_would_run_code_is_refused(cli, tmp_path, capsys):
    import torch

    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": Exploit()}, path)
    code, out, err = cli("evaluate", "--model_fn", path)
    assert code == 1 and "refused" in err and "code ran" not in out
    assert_one_line_error(err)


def test_model_file_of_another_architecture(cli, tmp_path, trained):
    import json

    from safetensors.torch import load_file, save_file

    from ptflow.models.files import read_model_file

    state, meta = read_model_file(trained["safetensors"])
    meta["model_args"]["hidden_sizes"] = [7, 5]
    for key in ("path", "sha256"):
        meta.pop(key)
    path = tmp_path / "other.safetensors"
    save_file(load_file(trained["safetensors"]), path, metadata={"ptflow": json.dumps(meta)})
    code, _, err = cli("evaluate", "--model_fn", path)
    assert code == 1 and "do not match" in err
    assert_one_line_error(err)


def test_image_that_is_not_an_image(cli, tmp_path, trained):
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"definitely not a png")
    code, _, err = cli("predict", "--model_fn", trained["safetensors"], fake)
    assert code == 1 and "photo.png: not an image in an accepted format" in err
    assert_one_line_error(err)


def test_wrong_input_shape(cli, tmp_path, trained):
    import numpy as np

    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 5, 5), np.uint8))
    code, _, err = cli("predict", "--model_fn", trained["safetensors"], tmp_path / "wrong.npz")
    assert code == 1 and "does not fit" in err
    assert_one_line_error(err)


def test_hyphenated_flags_are_accepted(cli, tmp_path):
    code, _, err = cli("train", "--dataset", "digits", "--n-epochs", "0", "--runs-dir", tmp_path)
    assert code == 2 and "--n_epochs must be >= 1" in err


def test_batch_size_one_trains_without_batch_norm(cli, tmp_path):
    code, _, err = cli("train", "--dataset", "digits", "--batch_size", "1", "--use_dropout", "--n_epochs", "1",
                       "--runs_dir", tmp_path, "--verbose", "0")
    assert code == 0, err
