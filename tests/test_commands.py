"""The article's entry points, `ptflow data`, photo preprocessing for `ptflow predict`, the command parser."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO

from ptflow.data.imaging import to_input


def run_script(*args, cwd):
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_articles_train_and_predict_scripts(tmp_path):
    model = tmp_path / "tmp.pth"
    done = run_script(REPO / "train.py", "--model_fn", model, "--gpu_id", "-1", "--batch_size", "64",
                      "--n_epochs", "2", "--n_layers", "3", "--dataset", "digits", "--runs_dir", tmp_path / "runs",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trained = float(done.stdout.split("Test accuracy: ")[1].split()[0])
    done = run_script(REPO / "predict.py", "--model_fn", model, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Accuracy: ")
    assert float(done.stdout.split()[1]) == pytest.approx(trained, abs=1e-4)  # the same test split


def test_data_command_describes_the_splits(cli, tmp_path):
    grid = tmp_path / "grid.png"
    code, out, _ = cli("data", "digits", "--out", grid)
    assert code == 0 and grid.stat().st_size > 1000
    sizes = out.split("splits")[1].splitlines()[0]
    train, val, test = (int(part.split()[-1]) for part in sizes.split(","))
    assert train + val + test == 1797 and test == 359  # --test_ratio 0.2 of scikit-learn's 1,797 digits
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and len(line.split()) == 4]
    assert len(rows) == 10 and sum(int(r[1]) for r in rows) == train


def test_photo_of_a_digit_becomes_mnist_like():
    """Dark ink on light paper, off-centre: inverted, cropped, fitted in 20x20, centred by mass."""
    from PIL import Image, ImageDraw

    photo = Image.new("RGB", (300, 200), (235, 230, 220))
    ImageDraw.Draw(photo).line([(40, 30), (60, 170)], fill=(20, 20, 30), width=12)
    x = to_input(photo, (1, 28, 28), "digit")[0].astype(float)
    assert x.shape == (28, 28) and x.max() > 200 and x[0].max() == 0  # light ink on black, clean border
    rows, cols = np.nonzero(x > 0)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21  # scaled into the 20-pixel box
    ys, xs = np.indices(x.shape)
    centre = ((ys * x).sum() / x.sum(), (xs * x).sum() / x.sum())
    assert centre == pytest.approx((14, 14), abs=1.0)


def test_blank_photo_is_all_background():
    from PIL import Image

    x = to_input(Image.new("L", (50, 50), 255), (1, 28, 28), "digit")
    assert x.shape == (1, 28, 28) and x.max() == 0


def test_resize_style_keeps_colour_channels():
    from PIL import Image

    x = to_input(Image.new("RGB", (40, 30), (255, 0, 0)), (3, 8, 8), "resize")
    assert x.shape == (3, 8, 8) and x[0].min() == 255 and x[1].max() == 0


def test_evaluate_json_matches_the_printed_accuracy(trained, cli, tmp_path):
    code, out, _ = cli("evaluate", "--model_fn", trained["pth"], "--out_dir", tmp_path)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert f"Accuracy: {report['accuracy']:.4f}" in out
    assert sum(report["support"]) == np.array(report["confusion_matrix"]).sum()


def test_only_the_command_being_run_gets_its_flags(capsys):
    from ptflow.cli import commands

    full = commands.build_parser()
    subcommands = next(a for a in full._actions if a.dest == "command").choices
    assert sorted(subcommands) == sorted(commands.name_of(c) for c in commands.COMMANDS)  # named after modules
    lazy = commands.build_parser(["train", "--n_epochs", "2"])
    lazy_subcommands = next(a for a in lazy._actions if a.dest == "command").choices
    assert sorted(lazy_subcommands) == sorted(subcommands)  # every command is still there by name
    assert len(lazy_subcommands["train"]._actions) == len(subcommands["train"]._actions)
    assert len(lazy_subcommands["serve"]._actions) == 1 < len(subcommands["serve"]._actions)  # --help alone
    # The top-level help lists every command with its help line, as the full parser does.
    assert commands.main(["--help"]) == 0
    lazy_help = capsys.readouterr().out
    with pytest.raises(SystemExit):
        full.parse_args(["--help"])
    assert lazy_help == capsys.readouterr().out
    assert commands.main(["serve", "--help"]) == 0 and "--max_queue" in capsys.readouterr().out
    assert commands.main(["nope"]) == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
