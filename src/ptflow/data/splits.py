"""Train/validation/test splits: the article's methodology.

The validation split picks hyperparameters and the best epoch, the test split only judges, and
preprocessing statistics come from the train split alone (preprocessing.py). Images stay uint8
here (a quarter of the float32 memory); they become floats one batch at a time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from ptflow.data import placement
from ptflow.data.geometry import Geometry, choose
from ptflow.data.preprocessing import mean_std
from ptflow.data.records import ImageList, decode_all
from ptflow.data.sources import RawData, load_raw
from ptflow.errors import PtflowError

STATS_SAMPLE = 4096  # image files: the training examples --normalize standard fits its mean and std on,
STATS_BYTES = 256 << 20  # as many of them as fit in this many bytes decoded


@dataclass(kw_only=True)  # six arrays of the same type: named, never in order
class Splits:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    image_style: str
    fingerprint: str  # sha256 of the raw data, to notice when a dataset changed under a run
    skipped: list[dict] = field(default_factory=list)  # image files left out (--bad_images skip)
    geometry: Geometry | None = None  # what image files become (--image_size, --crop_pct); None: arrays
    placement: str = ""  # for image files: in memory or streamed, and why (placement.py)
    test_id: str = ""  # for image files: the test split's fingerprint, from its list (test_fingerprint)
    train_shards: np.ndarray | None = None  # shards: data, each training example's shard (shard_order.py)

    def __post_init__(self):
        listed = isinstance(self.x_train, ImageList)  # image files: their geometry says, once chosen
        self._array_shape = None if listed else tuple(self.x_train.shape[1:])  # kept after release()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.geometry.shape if self.geometry is not None else self._array_shape

    def listed(self, part: str) -> bool:
        """Whether split `part` is an ImageList, decoded as batches need it (streaming.py)."""
        return isinstance(getattr(self, f"x_{part}"), ImageList)

    def take(self, part: str, index) -> np.ndarray:
        """Examples `index` of split `part` as arrays, decoded if they are only listed (one that
        cannot be decoded is left out here: training meets it and applies --bad_images)."""
        x = getattr(self, f"x_{part}")
        if isinstance(x, ImageList):
            from ptflow.data.bad_images import BadImages

            return decode_all(x.subset(index), self.geometry, BadImages("skip", 1.0, total=len(index)))[0]
        return x[index]

    def head(self, part: str, n: int) -> np.ndarray:
        """The first n examples of split `part` as arrays (take)."""
        return self.take(part, np.arange(min(n, len(getattr(self, f"y_{part}")))))

    def fitting_sample(self, normalize: str) -> np.ndarray:
        """The training examples preprocessing statistics are fitted on: all of an array dataset;
        of image files the first STATS_SAMPLE (already shuffled; at most STATS_BYTES decoded), so
        that a streamed run fits the same numbers as one in memory without decoding the whole
        dataset an extra time, and only one where nothing is fitted (--normalize none)."""
        if self.geometry is None:
            return self.x_train
        n = 1 if normalize == "none" else min(STATS_SAMPLE, max(1, STATS_BYTES // int(np.prod(self.input_shape))))
        return self.head("train", n)

    def test_fingerprint(self) -> str:
        """Which examples the test split holds, in order (predictions.py): of image files from their
        list, so a streamed and an in-memory run of one dataset name the same test split."""
        from ptflow import predictions

        return self.test_id or predictions.fingerprint(self.x_test, self.y_test)

    def shape(self, part: str) -> tuple[int, ...]:
        """The shape of split `part` ("train", "val", "test") as arrays: (N, *input_shape)."""
        return (len(getattr(self, f"y_{part}")), *self.input_shape)

    def release(self) -> None:
        """Let go of the arrays, keeping names, shapes and fingerprint, once nothing needs them."""
        self.x_train = self.y_train = self.x_val = self.y_val = self.x_test = self.y_test = None

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


def load_splits(name: str, data_dir: str | None = None, target: str | None = None,
                train_ratio: float = 0.8, test_ratio: float = 0.2, seed: int = 0, trust_code: bool = True,
                origin: str | None = None, fold: tuple[int, int] | None = None, bad_images=None,
                image_size: int | None = None, crop_pct: float | None = None, in_memory: str = "yes",
                decode: tuple[str, ...] = ("train", "val", "test"), interpolation: str | None = None,
                crops_from_files: bool = False) -> Splits:
    """The dataset `name`, split. bad_images (a bad_images.BadImages) says what an image file that
    cannot be read does: stop (the default) or be skipped.

    A dataset of image files is listed, split, then decoded at its geometry (image_size, crop_pct
    and interpolation, or the defaults geometry.py chooses from the training split's headers) into memory,
    or left as ImageLists to stream, as in_memory ("auto", "yes", "no": placement.py) says.
    decode: the splits decoded when in memory (`ptflow evaluate` needs only the test split).
    crops_from_files: training cuts random crops from each image (--augment): the training split
    then stays listed, its crops cut from the files, unless every image is already what evaluation
    makes of it (a crop of a resized image would be a blurred one).
    """
    from ptflow.data.bad_images import BadImages

    bad_images = bad_images if bad_images is not None else BadImages("fail", 0.0)
    raw = load_raw(name, data_dir, target, trust_code, origin, bad_images)
    splits = split(name, raw, train_ratio, test_ratio, seed, fold)
    if not isinstance(raw.x, ImageList):
        if in_memory == "no":
            from ptflow.errors import UsageError

            raise UsageError(f"--data_in_memory no: {name} is read as arrays, which are in memory already; "
                             f"streaming applies to image files (folder:, shards:)")
        return splits
    return place(splits, bad_images, image_size, crop_pct, in_memory, decode, interpolation, crops_from_files)


def place(splits: Splits, bad_images, image_size: int | None, crop_pct: float | None, mode: str,
          decode: tuple[str, ...] = ("train", "val", "test"), interpolation: str | None = None,
          crops_from_files: bool = False) -> Splits:
    """Decode the ImageLists of `splits` into memory, or keep them to stream (placement.py)."""
    train, listed = splits.x_train, len(bad_images.skipped)  # files skipped so far: already in the fingerprint
    geometry = choose([tuple(s) for s in train.sizes.tolist()], bool(train.gray.all()), image_size, crop_pct,
                      interpolation)
    from_files = crops_from_files and "train" in decode and not _as_evaluated(train, geometry)
    if from_files:
        decode = tuple(part for part in decode if part != "train")
    decoded = sum(len(getattr(splits, f"y_{part}")) for part in decode) * int(np.prod(geometry.shape))
    keep, why = placement.in_memory(mode, decoded, splits.name)
    if keep and from_files:
        why += "; training images read from their files, for random crops of the whole image"
    splits.geometry, splits.placement = geometry, why
    splits.train_shards = train.shard_numbers()
    splits.test_id = hashlib.sha256((splits.x_test.fingerprint() + json.dumps(geometry.key())).encode()
                                    + splits.y_test.astype("<i8").tobytes()).hexdigest()
    if keep:
        for part in decode:
            x, y = decode_all(getattr(splits, f"x_{part}"), geometry, bad_images)
            setattr(splits, f"x_{part}", x)
            setattr(splits, f"y_{part}", y)
        if len(splits.y_train) < len(train):  # rows --bad_images skip left out: the rows no longer match the list
            splits.train_shards = None
    if len(bad_images.skipped) > listed:  # files met damaged past their header while decoding: say which
        digest = hashlib.sha256(splits.fingerprint.encode())
        digest.update(_skipped_files(bad_images.skipped[listed:]))
        splits.fingerprint = digest.hexdigest()
    return splits


def _as_evaluated(images: ImageList, geometry) -> bool:
    """Whether every image is already what the evaluation transform makes of it (its size, no crop):
    then a random crop of the decoded pixels is one of the file's."""
    return geometry.crop_pct == 1.0 and bool((images.sizes == np.array(geometry.size)).all())


def split(name: str, raw: RawData, train_ratio: float, test_ratio: float, seed: int,
          fold: tuple[int, int] | None = None) -> Splits:
    """Shuffle with `seed`; hold out a test split only where the dataset has none of its own.

    The rows of raw.x and raw.y are shuffled in place and the splits are views of them: the
    data is never held twice (a dataset may be most of the machine's memory). raw is used up.
    With fold=(i, K) the examples left after the test split are cut into K stratified folds and
    fold i (1-based) validates, instead of the last 1 - train_ratio; the test split is the same.
    """
    rng = np.random.default_rng(seed)
    fingerprint = _fingerprint(raw)
    listed = isinstance(raw.x, ImageList)  # files not yet decoded: their lists are cut, not rows moved
    x, y, x_test, y_test = (raw.x, raw.y, raw.x_test, raw.y_test) if listed else \
        (_writable(raw.x), _writable(raw.y), raw.x_test, raw.y_test)
    if x_test is None:
        order = rng.permutation(len(x))
        n_test = int(round(len(x) * test_ratio))
        if listed:
            x, y = x.subset(order), y[order]
        else:
            shuffle_rows(order, x, y)
        x_test, y_test, x, y = x[:n_test], y[:n_test], x[n_test:], y[n_test:]
    order = rng.permutation(len(x))
    n_train = int(len(x) * train_ratio)  # the article's arithmetic
    if fold is not None:
        order, n_train = fold_order(order, y, *fold)
    # Two training examples at least: BatchNorm cannot train on one (and one is no dataset).
    if n_train < 2 or n_train == len(x) or len(x_test) == 0:
        raise PtflowError(f"{name}: {len(raw.x)} examples are too few to split into train (at least 2), "
                          f"validation and test with these ratios (--train_ratio, --test_ratio)")
    if listed:
        x, y = x.subset(order), y[order]
    else:
        shuffle_rows(order, x, y)
    return Splits(name=name, x_train=x[:n_train], y_train=y[:n_train], x_val=x[n_train:], y_val=y[n_train:],
                  x_test=x_test, y_test=y_test, classes=raw.classes, image_style=raw.image_style,
                  fingerprint=fingerprint, skipped=raw.skipped)


def fold_of(labels: np.ndarray, k: int) -> np.ndarray:
    """Each example's fold (0..k-1), stratified: the examples, grouped by class, are dealt to the
    folds in turn, so every fold gets each class's count divided by k give or take one, and the
    folds' sizes differ by one at most. The order of `labels` (already shuffled with the seed)
    decides who goes where within a class."""
    folds = np.empty(len(labels), dtype=np.int64)
    folds[np.argsort(labels, kind="stable")] = np.arange(len(labels)) % k
    return folds


def fold_order(order: np.ndarray, y: np.ndarray, fold: int, k: int) -> tuple[np.ndarray, int]:
    """The shuffled order rearranged so that fold `fold` (1-based) comes last; and how many train."""
    if len(order) < k:
        raise PtflowError(f"{len(order)} training examples cannot be cut into {k} folds")
    validates = fold_of(y[order], k) == fold - 1
    return np.concatenate([order[~validates], order[validates]]), int((~validates).sum())


def shuffle_rows(order: np.ndarray, *arrays: np.ndarray) -> None:
    """array[i] <- array[order[i]] for every i, in place: the same rows as array[order], without
    a second copy. Follows the permutation's cycles (50 ms for MNIST's 60,000 images)."""
    order = order.tolist()  # Python ints: indexing with numpy scalars is several times slower here
    done = bytearray(len(order))
    for start in range(len(order)):
        if done[start]:
            continue
        held = [a[start].copy() for a in arrays]
        i = start
        while True:
            done[i] = 1
            j = order[i]
            if j == start:
                for a, h in zip(arrays, held):
                    a[i] = h
                break
            for a in arrays:
                a[i] = a[j]
            i = j


def _writable(array: np.ndarray) -> np.ndarray:
    return array if array.flags.writeable else array.copy()


def _fingerprint(raw: RawData) -> str:
    """sha256 of the arrays and, where files were skipped, of which: a resumed run continues only on
    the same examples with the same files left out (and its bad_images.jsonl stays true)."""
    digest = hashlib.sha256()
    for array in (raw.x, raw.y, raw.x_test, raw.y_test):
        if isinstance(array, ImageList):  # files: by name, size and label, unread (records.py)
            digest.update(array.fingerprint().encode())
        elif array is not None:
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).data)
    if raw.skipped:  # nothing added otherwise: the fingerprints of every other dataset stay as they were
        digest.update(_skipped_files(raw.skipped))
    return digest.hexdigest()


def _skipped_files(skipped: list[dict]) -> bytes:
    """Which files --bad_images skip left out, as the fingerprints take them."""
    return json.dumps(sorted(s["file"] for s in skipped)).encode()


def describe(splits: Splits) -> dict:
    """The article's look at the data before training: sizes, classes, value range, statistics."""
    x = splits.fitting_sample("standard")  # of image files, a sample (the one --normalize standard fits)
    scale = 1 / 255 if x.dtype == np.uint8 else 1.0
    axes = (0, 2, 3) if splits.is_image else (0,)
    mean, std = mean_std(x, axes, scale)
    counts = {part: np.bincount(y, minlength=len(splits.classes)).tolist()
              for part, y in (("train", splits.y_train), ("val", splits.y_val), ("test", splits.y_test))}
    return {
        "dataset": splits.name,
        "input_shape": list(splits.input_shape),
        "dtype": str(x.dtype),
        "classes": splits.classes,
        "sizes": {part: int(sum(c)) for part, c in counts.items()},
        "class_counts": counts,
        "value_range": [float(x.min()), float(x.max())],
        "train_mean": mean.tolist(),
        "train_std": std.tolist(),
        "fingerprint": splits.fingerprint,
    }
