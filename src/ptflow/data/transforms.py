"""Augmentation of photos from torchvision.transforms.v2: the presets, the per-example training
transform, batch mixing (mixup, cutmix) and the loss on the soft targets mixing makes.

Per example (in DataLoader workers, on a PIL image): random resized crop, horizontal flip,
RandAugment or TrivialAugment, then random erasing on the uint8 tensor. Without an automatic
policy the crop, flip and erasing run fused in crops.py, drawing what v2 draws. Per batch (in the
training loop): mixup or cutmix, and label smoothing in the loss. The order and the recipes are
those of torchvision's classification reference (references/classification/presets.py and
train.py: crop -> flip -> auto-augment -> tensor -> erasing; mixup/cutmix by RandomChoice on
batches; label smoothing in the cross-entropy), with the values of timm's train.py flags
(`--aa rand-m9-n2`, `--reprob 0.25`, `--mixup 0.2 --cutmix 1.0`, `--smoothing 0.1`).

Determinism: torchvision's transforms draw from torch's global generator. The dataset seeds it
with `seed_example(seed, epoch, index)` before transforming example `index`, so an example's
augmentation depends on nothing but those three numbers: not on the worker that makes it, nor on
how many workers there are. `mix_batch` draws one seed from the run's own generator (saved in
checkpoints) and runs torchvision's draws under it, leaving the global generator as it was.

Pure standard library at import: config.py reads AUGMENT and AUTO_AUGMENT from here, and
`ptflow --help` must not import torch. torch and torchvision are imported where used.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from ptflow.data.geometry import DEFAULT_INTERPOLATION

AUGMENT = ("none", "light", "standard", "strong")
AUTO_AUGMENT = ("none", "randaugment", "trivialaugment")
# The TrainConfig fields that override a preset (None there: the preset's value)
KNOBS = ("auto_augment", "random_erasing", "mixup", "cutmix", "label_smoothing")

# What each preset sets; knobs not named here are off. Each adds to the one before, except that
# strong replaces TrivialAugment with RandAugment (one automatic policy at a time).
PRESETS = {
    "none": {},  # no randomness at all: the evaluation transform trains
    # scale 0.35..1, not ImageNet's 0.08..1: a crop of 8% of a small or low-resolution photo
    # often no longer holds the object
    "light": {"crop_scale": (0.35, 1.0), "hflip": 0.5},
    # TrivialAugmentWide: no magnitude to tune (torchvision's ResNet-50 v2 recipe uses it)
    "standard": {"crop_scale": (0.35, 1.0), "hflip": 0.5, "auto_augment": "trivialaugment",
                 "label_smoothing": 0.1},
    "strong": {"crop_scale": (0.35, 1.0), "hflip": 0.5, "auto_augment": "randaugment", "label_smoothing": 0.1,
               "random_erasing": 0.25, "mixup": 0.2, "cutmix": 1.0},
}
RANDAUGMENT = {"num_ops": 2, "magnitude": 9}  # timm's rand-m9-n2 (torchvision's defaults too)
ERASE_VALUE = 127  # mid grey: erasing runs on uint8 pixels, before any mean/std, so no "0 = the mean" there


@dataclass(frozen=True)
class Augmentation:
    """A preset with every knob resolved: what a run trains with, and what its run folder records."""

    preset: str = "none"
    crop_scale: tuple[float, float] | None = None  # random resized crop's area range; None: no random crop
    hflip: float = 0.0  # probability of a left-right mirror
    auto_augment: str = "none"  # one of AUTO_AUGMENT
    random_erasing: float = 0.0  # probability of erasing one rectangle
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0: off
    cutmix: float = 0.0  # Beta(alpha, alpha) of cutmix; 0: off
    label_smoothing: float = 0.0

    @classmethod
    def of(cls, values, *, flip: bool) -> Augmentation:
        """The preset `values["augment"]` with each knob of `values` that is not None winning over it.

        values: a TrainConfig or its to_dict() (other keys are ignored). flip: whether a mirrored
        example is still an example of its class, a property of the dataset (photos of things
        yes, handwriting no); without it no preset flips."""
        if not isinstance(values, Mapping):
            values = dataclasses.asdict(values)
        preset = values.get("augment") or "none"
        if preset not in PRESETS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENT)}, got {preset!r}")
        resolved = {**PRESETS[preset], **{k: values[k] for k in KNOBS if values.get(k) is not None}}
        if not flip:
            resolved["hflip"] = 0.0
        return cls(preset=preset, **resolved)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["crop_scale"] = list(self.crop_scale) if self.crop_scale else None  # JSON has no tuples
        return out

    @property
    def per_example(self) -> bool:
        """Whether any per-example transform is random (else the evaluation transform trains)."""
        return bool(self.crop_scale or self.hflip or self.auto_augment != "none" or self.random_erasing)

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


def train_transform(aug: Augmentation, size: tuple[int, int], channels: int,
                    interpolation: str = DEFAULT_INTERPOLATION):
    """PIL image in mode "L" (channels 1) or "RGB" (channels 3) -> uint8 tensor (channels, *size),
    every resize by `interpolation` (bilinear or bicubic: --interpolation, as evaluation resizes).

    None when nothing per example is random: the caller then uses its evaluation transform. A
    random resized crop without auto-augment is crops.CropFlip, which also reads image files
    (`read`: the box drawn before decoding); the rest is a v2 Compose. The result is picklable
    (DataLoader workers may be spawned)."""
    if not aug.per_example:
        return None
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    size = (int(size[0]), int(size[1]))
    if aug.crop_scale and aug.auto_augment == "none":  # crop, flip, erasing: fused (crops.py), same draws
        from ptflow.data.crops import CropFlip

        return CropFlip(size, aug.crop_scale, aug.hflip, aug.random_erasing, mode, ERASE_VALUE, interpolation)
    from torchvision.transforms import InterpolationMode, v2

    resize = InterpolationMode(interpolation)  # on PIL images: Pillow's own filter of that name
    steps = []
    if aug.crop_scale:
        steps.append(v2.RandomResizedCrop(size, scale=aug.crop_scale, interpolation=resize, antialias=True))
    else:  # no random crop: the image as evaluation sizes it (a no-op here on those), else shorter side to size
        steps += [v2.Resize(min(size), interpolation=resize, antialias=True), v2.CenterCrop(size)]
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.auto_augment == "randaugment":
        steps.append(v2.RandAugment(**RANDAUGMENT))
    elif aug.auto_augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    steps.append(v2.PILToTensor())  # |x| = (channels, *size), uint8
    if aug.random_erasing:
        steps.append(v2.RandomErasing(aug.random_erasing, value=ERASE_VALUE))
    return TrainTransform(v2.Compose(steps), mode, crops=bool(aug.crop_scale))


class TrainTransform:
    """The composed transform, refusing an image of the wrong mode (which would make a batch of
    mixed channel counts far from here)."""

    def __init__(self, transform, mode: str, crops: bool = False):
        # crops: it cuts a random crop from the whole image; else it takes the image as evaluation
        # sizes it (streaming.py hands it that, from a file as from memory)
        self.transform, self.mode, self.crops = transform, mode, crops

    def __call__(self, image):
        if image.mode != self.mode:
            raise ValueError(f"the training transform takes {self.mode} images, got {image.mode}")
        return self.transform(image)

    def __repr__(self) -> str:
        return f"TrainTransform({self.mode}, {self.transform})"


def seed_for(seed: int, epoch: int, index: int) -> int:
    """The global generator's seed for example `index` of epoch `epoch`: a hash, so that nearby
    triples give unrelated streams; 0..2**63-1, which torch.manual_seed takes. About 1 us."""
    digest = hashlib.blake2b(f"{seed},{epoch},{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_example(seed: int, epoch: int, index: int) -> None:
    """Seed the global CPU generator, which the transforms draw from, for example `index` of
    epoch `epoch`; call it before transforming that example. Only the CPU generator:
    torch.manual_seed also seeds every GPU's and takes ~100 us, as long as a small image's transform."""
    import torch

    torch.default_generator.manual_seed(seed_for(seed, epoch, index))


@functools.lru_cache(maxsize=8)
def _mixer(n_classes: int, alpha_mixup: float, alpha_cutmix: float):
    from torchvision.transforms import v2

    mixers = []
    if alpha_mixup > 0:
        mixers.append(v2.MixUp(alpha=alpha_mixup, num_classes=n_classes))
    if alpha_cutmix > 0:
        mixers.append(v2.CutMix(alpha=alpha_cutmix, num_classes=n_classes))
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)  # both: one or the other per batch


def mix_batch(x, y, n_classes: int, alpha_mixup: float, alpha_cutmix: float, generator):
    """Mixup or cutmix of a batch: (x, y) -> (mixed x, soft targets).

    |x| = (N, C, H, W) uint8 or float; |y| = (N,) int64 class indices. Returns x as float32 pixels
    on the same scale (0..255 for uint8: mixing uint8 would round) or as its own float dtype, and
    |targets| = (N, n_classes) float32, each row summing to 1. Example i is mixed with example
    i - 1 (torchvision pairs neighbours: the batch must be shuffled). With both alphas 0, x as
    given and one-hot targets.

    torchvision's MixUp and CutMix draw from the global generator; they run here under a seed
    drawn from `generator` (the run's, saved in its checkpoints), and the global generator (which
    draws dropout masks) is left as it was: the same generator state gives the same batch."""
    import torch
    import torch.nn.functional as F

    if alpha_mixup <= 0 and alpha_cutmix <= 0:
        return x, F.one_hot(y, n_classes).float()
    seed = int(torch.randint(0, 2 ** 63 - 1, (), generator=generator))
    x = x if x.is_floating_point() else x.float()
    with torch.random.fork_rng(devices=[]):  # the draws are on the CPU, whatever x's device
        torch.default_generator.manual_seed(seed)  # not torch.manual_seed: it would reseed the GPUs' too
        return _mixer(n_classes, float(alpha_mixup), float(alpha_cutmix))(x, y)


def soft_target_loss(scores, targets, returns_log_probs: bool, label_smoothing: float = 0.0):
    """The batch's mean cross-entropy against class indices (N,) or probabilities (N, K), with
    label smoothing (targets * (1 - eps) + eps / K, as torch's cross_entropy smooths).

    |scores| = (N, K): logits, or log-probabilities where the model ends in log-softmax (the
    built-ins): cross_entropy on those would apply a second log-softmax, which is harmless to
    the value (log-softmax leaves log-probabilities as they are) but costs a pass, so the sum
    is taken directly."""
    import torch.nn.functional as F

    if not returns_log_probs:
        return F.cross_entropy(scores, targets, label_smoothing=label_smoothing)
    scores = scores.float()  # under bf16 autocast too: a sum over classes wants fp32, as cross_entropy does
    if targets.is_floating_point():
        probs = targets.float()
    elif not label_smoothing:
        return F.nll_loss(scores, targets)
    else:
        probs = F.one_hot(targets, scores.shape[-1]).float()
    if label_smoothing:
        probs = probs * (1 - label_smoothing) + label_smoothing / scores.shape[-1]
    return -(probs * scores).sum(-1).mean()
