import torch

from ptflow.config import PRESETS
from ptflow.data.augment import draw_flips, draw_shifts, random_flip, random_shift


def test_random_shift_moves_each_image_within_bounds():
    x = torch.zeros(64, 1, 9, 9, dtype=torch.uint8)
    x[:, :, 4, 4] = 255  # one lit pixel in the centre
    out = random_shift(x, 2, draw_shifts(64, 2, torch.Generator().manual_seed(0), x.device))
    assert out.shape == x.shape and out.dtype == torch.uint8
    lit = out[:, 0].flatten(1).argmax(1)
    rows, cols = lit // 9, lit % 9
    assert (out.flatten(1).sum(1) == 255).all()  # nothing lost or duplicated at this shift
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # a fresh draw per image


def test_random_shift_follows_its_generator():
    x = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    a = random_shift(x, 1, draw_shifts(16, 1, torch.Generator().manual_seed(5), x.device))
    b = random_shift(x, 1, draw_shifts(16, 1, torch.Generator().manual_seed(5), x.device))
    assert torch.equal(a, b)


def test_random_shift_moves_by_the_given_offsets():
    x = torch.arange(2 * 5 * 5, dtype=torch.uint8).reshape(2, 1, 5, 5)
    out = random_shift(x, 1, torch.tensor([[1, 0], [1, 2]]))  # image 0 stays; image 1: out[r, c] = x[r-1, c+1]
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1, 0, 1:, :-1], x[1, 0, :-1, 1:])  # content moved down one row, left one column
    assert (out[1, 0, 0] == 0).all() and (out[1, 0, :, -1] == 0).all()  # filled with zeros


def test_random_flip_mirrors_exactly_the_drawn_images():
    x = torch.randint(0, 255, (200, 2, 4, 5), dtype=torch.uint8)
    flips = draw_flips(200, torch.Generator().manual_seed(1), x.device)
    out = random_flip(x, flips)
    assert torch.equal(out[flips], x[flips].flip(-1)) and torch.equal(out[~flips], x[~flips])
    assert 70 < int(flips.sum()) < 130  # about half
    assert torch.equal(flips, draw_flips(200, torch.Generator().manual_seed(1), x.device))  # follows its generator


def test_augment_flip_needs_images_and_trains_on_them(cli, tmp_path, tabular):
    code, _, err = cli("train", "--dataset", f"npz:{tabular.parent / 'features.npz'}", "--augment_flip",
                       "--n_epochs", "1", "--runs_dir", tmp_path)
    assert code == 2 and "--augment_flip needs image data" in err
    code, out, _ = cli("train", "--dataset", "digits", "--augment_flip", "--augment_shift", "1", "--n_epochs", "2",
                       "--batch_size", "32", "--runs_dir", tmp_path, "--run_name", "flip", "--verbose", "0")
    assert code == 0 and "Test accuracy" in out


def test_flags_override_a_preset(cli):
    code, out, _ = cli("train", "--preset", "fast", "--n_epochs", "5", "--dataset", "digits", "--print_config")
    assert code == 0
    assert "n_epochs: 5" in out  # the flag wins
    assert f"scheduler: \"{PRESETS['fast']['scheduler']}\"" in out and "model: \"cnn\"" in out


def test_augment_shift_needs_images(cli, tmp_path):
    data = tmp_path / "t.csv"
    data.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    code, _, err = cli("train", "--dataset", f"csv:{data}", "--augment_shift", "2", "--runs_dir", tmp_path / "runs")
    assert code == 2 and "needs image data" in err


def test_training_with_shifts_is_deterministic(cli, npz_data, tmp_path):
    import json

    runs = []
    for name in ("a", "b"):
        code, _, _ = cli("train", "--dataset", f"npz:{npz_data}", "--model", "cnn", "--channels", "4,8",
                         "--augment_shift", "1", "--n_epochs", "2", "--batch_size", "32",
                         "--runs_dir", tmp_path, "--run_name", name, "--verbose", "0")
        assert code == 0
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        runs.append([json.loads(line)["train_loss"] for line in lines])
    assert runs[0] == runs[1]


def test_augment_on_features_is_refused_before_a_run_folder_exists(cli, tmp_path):
    data = tmp_path / "t.csv"
    data.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    for flags in (("--augment", "light"), ("--mixup", "0.2")):
        code, _, err = cli("train", "--dataset", f"csv:{data}", *flags, "--runs_dir", tmp_path / "runs")
        assert code == 2 and "needs image data" in err and len(err.strip().splitlines()) == 1, flags
        assert not (tmp_path / "runs").exists(), flags
