"""The augmentation presets and knobs (data/transforms.py): what each preset resolves to, the
per-example transform's output, its determinism per (seed, epoch, index) whatever the worker
count, batch mixing and the loss on soft targets, and the train flags' one-line refusals.

The presets and flag checks need no torchvision and run on the core install; the rest is
skipped there."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_refused_before_a_run

from ptflow.config import TrainConfig
from ptflow.data.transforms import (
    AUGMENT,
    PRESETS,
    Augmentation,
    mix_batch,
    seed_example,
    seed_for,
    soft_target_loss,
    train_transform,
)

needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision is not installed (the image extra)")
SIZE = (24, 20)  # (H, W): not square, so a transposed result would show


def _image(mode: str, seed: int = 0, height: int = 37, width: int = 53):
    from PIL import Image

    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode)


def _transformed(transform, image, seed: int, epoch: int, index: int) -> torch.Tensor:
    seed_example(seed, epoch, index)  # what the dataset does before each example
    return transform(image)


# --- presets and knobs ---

def test_presets_resolve_and_explicit_knobs_win():
    strong = Augmentation.of({"augment": "strong"}, flip=True)
    assert (strong.auto_augment, strong.random_erasing, strong.mixup, strong.cutmix) == ("randaugment", 0.25, 0.2, 1.0)
    assert strong.crop_scale == (0.35, 1.0) and strong.hflip == 0.5 and strong.label_smoothing == 0.1
    changed = Augmentation.of({"augment": "strong", "mixup": 0.0, "auto_augment": "none", "random_erasing": None,
                               "label_smoothing": 0.05, "lr": 1.0}, flip=True)  # other keys: ignored
    assert (changed.mixup, changed.auto_augment, changed.label_smoothing) == (0.0, "none", 0.05)
    assert changed.random_erasing == 0.25 and changed.cutmix == 1.0  # None: the preset's
    knob_alone = Augmentation.of({"augment": "none", "cutmix": 1.0}, flip=True)
    assert knob_alone.cutmix == 1.0 and knob_alone.mixes and not knob_alone.per_example
    assert Augmentation.of({"augment": "standard"}, flip=True).auto_augment == "trivialaugment"


def test_each_preset_adds_to_the_one_before():
    for smaller, larger in zip(AUGMENT, AUGMENT[1:]):
        # strong trades TrivialAugment for RandAugment; every other setting is kept or added
        kept = {k: v for k, v in PRESETS[smaller].items() if k != "auto_augment"}
        assert kept.items() <= PRESETS[larger].items(), (smaller, larger)


def test_flip_is_the_datasets_to_allow():
    assert Augmentation.of({"augment": "light"}, flip=True).hflip == 0.5
    assert Augmentation.of({"augment": "light"}, flip=False).hflip == 0.0


def test_defaults_of_the_train_config_mean_no_augmentation():
    aug = Augmentation.of(TrainConfig().to_dict(), flip=True)
    strong = TrainConfig(augment="strong", cutmix=0.0)
    assert Augmentation.of(strong, flip=True) == Augmentation.of(strong.to_dict(), flip=True)
    assert aug == Augmentation() and not aug.per_example and not aug.mixes
    record = aug.to_dict()
    assert record["preset"] == "none" and set(record) == {f for f in Augmentation.__dataclass_fields__}
    assert Augmentation.of({"augment": "light"}, flip=True).to_dict()["crop_scale"] == [0.35, 1.0]  # JSON-able


# --- the per-example transform ---

@needs_torchvision
@pytest.mark.parametrize("preset", AUGMENT[1:])
@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1)])
def test_training_transform_gives_uint8_images_of_the_asked_size(preset, mode, channels):
    transform = train_transform(Augmentation.of({"augment": preset}, flip=True), SIZE, channels)
    for index, (height, width) in enumerate([(37, 53), (53, 37), (5, 300)]):  # odd sizes, both orientations
        x = _transformed(transform, _image(mode, index, height, width), 0, 0, index)
        assert type(x) is torch.Tensor and x.dtype == torch.uint8 and x.shape == (channels, *SIZE)


@needs_torchvision
def test_no_random_transform_gives_none():
    assert train_transform(Augmentation.of({"augment": "none"}, flip=True), SIZE, 3) is None
    assert train_transform(Augmentation.of({"augment": "none", "mixup": 0.2}, flip=True), SIZE, 3) is None
    assert train_transform(Augmentation.of({"augment": "light"}, flip=False), SIZE, 3) is not None  # the crop


@needs_torchvision
def test_the_transform_refuses_an_image_of_the_other_mode():
    transform = train_transform(Augmentation.of({"augment": "light"}, flip=True), SIZE, 1)
    with pytest.raises(ValueError, match="takes L images, got RGB"):
        transform(_image("RGB"))


@needs_torchvision
def test_random_erasing_paints_one_grey_rectangle_on_uint8_pixels():
    aug = Augmentation(random_erasing=1.0)  # nothing else random: the image is resized, then erased
    black = _image("RGB").point(lambda _: 0)
    x = _transformed(train_transform(aug, SIZE, 3), black, 0, 0, 0)
    erased = (x == 127).all(0)
    assert set(x.unique().tolist()) == {0, 127} and erased.any()
    rows, cols = erased.nonzero().unbind(1)
    assert erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one filled rectangle


class _Examples(torch.utils.data.Dataset):
    """Example i of an epoch, transformed as the streaming dataset does: seeded by (seed, epoch, i)."""

    def __init__(self, transform, seed: int, epoch: int):
        self.transform, self.seed, self.epoch = transform, seed, epoch
        self.images = [_image("RGB", i) for i in range(6)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return _transformed(self.transform, self.images[index], self.seed, self.epoch, index)


@needs_torchvision
def test_an_example_depends_on_seed_epoch_and_index_only_not_on_the_workers():
    transform = train_transform(Augmentation.of({"augment": "strong"}, flip=True), SIZE, 3)

    def epoch(workers: int, seed: int = 0, number: int = 0) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(_Examples(transform, seed, number), batch_size=2, num_workers=workers)
        return torch.cat(list(loader))

    alone = epoch(0)
    torch.manual_seed(123)  # the training process's own generator state must not matter either
    assert torch.equal(alone, epoch(2))
    assert torch.equal(alone, epoch(0))
    assert all(not torch.equal(alone[i], alone[j]) for i in range(6) for j in range(i))  # each its own
    assert not torch.equal(alone, epoch(0, number=1)) and not torch.equal(alone, epoch(0, seed=1))
    same_image = [_transformed(transform, _image("RGB", 0), 0, 0, i) for i in range(4)]
    assert len({x.numpy().tobytes() for x in same_image}) == 4  # another index, another draw


def test_seeds_are_stable_and_spread():
    assert seed_for(0, 0, 0) == seed_for(0, 0, 0) and 0 <= seed_for(2 ** 63 - 1, 10 ** 6, 10 ** 9) < 2 ** 63
    seed_example(3, 1, 4)
    drawn = torch.rand(4)
    torch.manual_seed(seed_for(3, 1, 4))
    assert torch.equal(drawn, torch.rand(4))  # the CPU generator as torch.manual_seed sets it
    triples = [(s, e, i) for s in range(3) for e in range(3) for i in range(50)]
    assert len({seed_for(*t) for t in triples}) == len(triples)


# --- batch mixing and its loss ---

@needs_torchvision
@pytest.mark.parametrize("alphas", [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mix_batch_follows_its_generator_and_keeps_the_global_one(alphas):
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(16) % 5
    before = torch.get_rng_state()
    runs = [mix_batch(x, y, 5, *alphas, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), before)  # dropout's generator untouched
    (a, targets), (b, again) = runs
    assert torch.equal(a, b) and torch.equal(targets, again)
    assert a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 255
    assert targets.shape == (16, 5) and torch.allclose(targets.sum(1), torch.ones(16))
    generator = torch.Generator().manual_seed(7)
    draws = [mix_batch(x, y, 5, *alphas, generator)[1] for _ in range(4)]  # a stream: fresh draws each batch
    assert len({d.numpy().tobytes() for d in draws}) > 1


@needs_torchvision
def test_mixup_mixes_images_and_labels_by_the_same_amount():
    x = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(8)  # distinct classes: the weight of each label is readable
    mixed, targets = mix_batch(x, y, 8, 0.4, 0.0, torch.Generator().manual_seed(3))
    lam = targets[0, 0]  # example i is mixed with example i - 1
    assert torch.allclose(targets[torch.arange(8), y], lam.expand(8))
    assert torch.allclose(targets[torch.arange(8), y.roll(1)], (1 - lam).expand(8))
    assert torch.allclose(mixed, lam * x.float() + (1 - lam) * x.roll(1, 0).float(), atol=1e-4)


@needs_torchvision
def test_cutmix_pastes_as_many_pixels_as_the_label_says():
    x = torch.arange(8, dtype=torch.float32).reshape(8, 1, 1, 1).expand(8, 1, 10, 10).contiguous()
    y = torch.arange(8)
    for seed in range(5):
        mixed, targets = mix_batch(x, y, 8, 0.0, 1.0, torch.Generator().manual_seed(seed))
        pasted = (mixed != x).float().mean((1, 2, 3))  # every image is one value: a pasted pixel differs
        assert torch.allclose(pasted, targets[torch.arange(8), y.roll(1)])


@needs_torchvision
@pytest.mark.parametrize("alphas", [(0.4, 0.0), (0.0, 1.0)])
def test_mixed_pixels_scaled_then_preprocessed_equal_preprocessed_images_mixed(alphas):
    """Preprocess takes floats as already scaled (x * scale done): mixed 0..255 pixels times the
    scale give what mixing the preprocessed images gives, mixing and the per-channel affine
    standardisation commuting."""
    from ptflow.models.networks import Preprocess

    preprocess = Preprocess((3, 6, 6), 1 / 255, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    x = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    y = torch.arange(8) % 4
    mixed, _ = mix_batch(x, y, 4, *alphas, torch.Generator().manual_seed(1))
    expected, _ = mix_batch(preprocess(x), y, 4, *alphas, torch.Generator().manual_seed(1))
    assert torch.allclose(preprocess(mixed * preprocess.scale), expected, atol=1e-5)


def test_soft_target_loss_is_cross_entropy_with_label_smoothing():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    soft = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), -1)
    log_probs = torch.log_softmax(logits, -1)
    for eps in (0.0, 0.1):
        for targets in (y, soft):
            expected = F.cross_entropy(logits, targets, label_smoothing=eps)
            assert torch.allclose(soft_target_loss(logits, targets, False, eps), expected)
            # log-probabilities: the same loss, log-softmax leaving them as they are
            assert torch.allclose(soft_target_loss(log_probs, targets, True, eps), expected, atol=1e-6)
    assert torch.allclose(soft_target_loss(log_probs, F.one_hot(y, 4).float(), True), F.nll_loss(log_probs, y))


# --- the train flags ---

@pytest.mark.parametrize("flags,words", [
    (["--augment", "huge"], ["--augment", "invalid choice"]),
    (["--auto_augment", "autoaugment"], ["--auto_augment must be one of none, randaugment, trivialaugment"]),
    (["--random_erasing", "1.5"], ["--random_erasing must be in [0, 1]"]),
    (["--mixup", "nan"], ["--mixup must be a finite alpha"]),
    (["--cutmix", "inf"], ["--cutmix must be a finite alpha"]),
    (["--cutmix", "-0.5"], ["--cutmix must be a finite alpha"]),
    (["--label_smoothing", "1"], ["--label_smoothing must be in [0, 1)"]),
    (["--mixup", "lots"], ["--mixup", "invalid float"]),
])
def test_bad_augmentation_flags_are_one_line_errors(cli, tmp_path, flags, words):
    assert_refused_before_a_run(cli, tmp_path, "--dataset", "digits", *flags, words=tuple(words))


def test_augmentation_flags_reach_the_config(cli):
    code, out, _ = cli("train", "--dataset", "digits", "--augment", "strong", "--mixup", "0",
                       "--auto_augment", "trivialaugment", "--print_config")
    assert code == 0
    assert 'augment: "strong"' in out and "mixup: 0.0" in out and 'auto_augment: "trivialaugment"' in out
    assert "cutmix: null" in out  # not given: the preset's
