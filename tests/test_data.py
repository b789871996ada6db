import gzip

import numpy as np
import pytest
from helpers import make_images, write_idx

from ptflow.data.idx import read_idx
from ptflow.data.preprocessing import fit_preprocessing
from ptflow.data.sources import RawData, load_raw
from ptflow.data.splits import load_splits, shuffle_rows, split
from ptflow.errors import PtflowError, UsageError


def test_idx_round_trip_gzip_and_raw(tmp_path):
    x, _ = make_images(7, size=5)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", x)), x)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b", x, compress=False)), x)


def test_idx_truncated_and_bad_magic_are_clear_errors(tmp_path):
    x, _ = make_images(7, size=5)
    raw = write_idx(tmp_path / "a", x, compress=False)
    truncated = tmp_path / "t"
    truncated.write_bytes(raw.read_bytes()[:-10])
    with pytest.raises(PtflowError, match="truncated or corrupt"):
        read_idx(truncated)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + b"\x00" * 20))
    with pytest.raises(PtflowError, match="magic"):
        read_idx(bad)


def test_idx_layouts_are_found_in_data_dir(idx_dir, tmp_path):
    splits = load_splits("mnist", str(idx_dir))
    assert splits.input_shape == (1, 10, 10)
    assert len(splits.x_test) == 60  # the dataset's own test split is kept
    assert len(splits.x_train) == 160 and len(splits.x_val) == 40  # 0.8 / 0.2 of the 200
    # torchvision's DIR/MNIST/raw/ layout
    tv = tmp_path / "MNIST" / "raw"
    tv.mkdir(parents=True)
    for f in idx_dir.iterdir():
        (tv / f.name).write_bytes(f.read_bytes())
    assert load_splits("mnist", str(tmp_path)).fingerprint == splits.fingerprint


def test_split_is_deterministic_and_disjoint(npz_data):
    a = load_splits(f"npz:{npz_data}", seed=3)
    b = load_splits(f"npz:{npz_data}", seed=3)
    c = load_splits(f"npz:{npz_data}", seed=4)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 300
    assert len(a.x_test) == 60  # held out by --test_ratio 0.2


def test_shuffle_rows_is_fancy_indexing_in_place():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 255, (500, 1, 4, 4), dtype=np.uint8), rng.integers(0, 9, 500)
    order = rng.permutation(500)
    expected_x, expected_y = x[order], y[order]
    memory = x.__array_interface__["data"][0]
    shuffle_rows(order, x, y)
    assert np.array_equal(x, expected_x) and np.array_equal(y, expected_y)
    assert x.__array_interface__["data"][0] == memory  # the same buffer: no second copy


@pytest.mark.parametrize("own_test_split", [False, True])
def test_split_gives_the_rows_a_shuffled_copy_would(own_test_split):
    """The in-place split picks exactly the examples that indexing copies of the data would."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(200, 3)).astype(np.float32), rng.integers(0, 2, 200)
    x_test = rng.normal(size=(30, 3)).astype(np.float32) if own_test_split else None
    y_test = rng.integers(0, 2, 30) if own_test_split else None
    reference = np.random.default_rng(7)
    rx, ry, rx_test, ry_test = x.copy(), y.copy(), x_test, y_test
    if rx_test is None:
        order = reference.permutation(len(rx))
        rx_test, ry_test, rx, ry = rx[order[:40]], ry[order[:40]], rx[order[40:]], ry[order[40:]]
    order = reference.permutation(len(rx))
    n_train = int(len(rx) * 0.8)
    splits = split("t", RawData(x, y, ["a", "b"], x_test=x_test, y_test=y_test), 0.8, 0.2, seed=7)
    assert np.array_equal(splits.x_train, rx[order[:n_train]]) and np.array_equal(splits.y_val, ry[order[n_train:]])
    assert np.array_equal(splits.x_val, rx[order[n_train:]]) and np.array_equal(splits.x_test, rx_test)
    assert np.array_equal(splits.y_train, ry[order[:n_train]]) and np.array_equal(splits.y_test, ry_test)


def test_standardisation_uses_the_train_split_only(npz_data):
    splits = load_splits(f"npz:{npz_data}")
    prep = fit_preprocessing(splits.x_train, "standard")
    expected = (splits.x_train / 255.0).mean()
    assert prep.mean == pytest.approx([expected], rel=1e-6)
    assert prep.mean != pytest.approx([(splits.x_test / 255.0).mean()], rel=1e-6)
    assert fit_preprocessing(splits.x_train, "none").mean is None


def test_csv_with_header_string_labels_and_target(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text("species,a,b\nsetosa,1,2\nvirginica,3,4\nsetosa,1.5,2.5\n")
    raw = load_raw(f"csv:{path}", target="species")
    assert raw.classes == ["setosa", "virginica"]
    assert raw.x.shape == (3, 2) and raw.x.dtype == np.float32
    assert raw.y.tolist() == [0, 1, 0]


@pytest.mark.parametrize("content, message", [
    ("a,b,label\n1,x,0\n", "non-numeric"),
    ("a,b,label\n1,2,\n", "no label"),
    ("a,b,label\n1,2\n", "cells"),
])
def test_bad_csv_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(PtflowError, match=message):
        load_raw(f"csv:{path}")


def test_folder_dataset(tmp_path):
    from PIL import Image

    x, y = make_images(30, size=12)
    for i, (image, label) in enumerate(zip(x, y)):
        folder = tmp_path / f"class{label}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    raw = load_raw(f"folder:{tmp_path}")
    assert len(raw.x) == 30 and raw.x.gray.all() and (raw.x.sizes == 12).all()  # listed from the headers
    assert raw.classes == ["class0", "class1", "class2"]
    splits = load_splits(f"folder:{tmp_path}", test_ratio=0.2)  # one size: kept, nothing cropped
    assert splits.input_shape == (1, 12, 12) and splits.x_train.dtype == np.uint8


def test_unknown_dataset_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown dataset"):
        load_raw("imagenet")


def test_digits_ships_offline():
    splits = load_splits("digits")
    assert splits.input_shape == (1, 8, 8) and len(splits.classes) == 10
    assert splits.x_train.dtype == np.uint8 and splits.x_train.max() == 255
