"""Examples decoded as batches need them, in DataLoader worker processes: the streaming path.

The training loop decides which examples make each batch (the same shuffled order, the same
slice per process under torchrun, the same balanced draws as in memory); this module only
turns those index lists into uint8 batches (N, C, H, W). Workers decode each example through
geometry.read_pixels, the function that fills the in-memory arrays, so with augmentation off
both paths feed the network the same bytes in the same order and train the same weights.

With a training transform (--augment), each example is transformed in the worker after a
`torch.manual_seed` drawn from (seed, epoch, example): the same image whatever the worker
count or which worker took it, and a resumed run sees the same augmentations. A transform that
reads files itself (crops.CropFlip: it draws the crop from the header, then decodes at most what
the crop needs) is handed the file; any other gets the decoded image. Stored arrays
(a dataset in memory, with augmentation) go through the same workers.

An example that cannot be decoded (a file damaged past its header) does not raise in the
worker, where the error would come back wrapped in a traceback: it comes back as a `Bad` beside
the batch, and the training process applies --bad_images (stop with one line, or skip it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ptflow.data.geometry import Geometry, read_pixels
from ptflow.data.records import ImageList
from ptflow.errors import PtflowError


@dataclass
class Bad:
    """An example a worker could not decode: which, and the one-line error."""

    index: int  # its position in the batch
    name: str
    error: PtflowError


def default_workers(processes: int = 1) -> int:
    """Decoding workers per training process: the cores this process may use, less one for
    training itself, shared by the processes on this machine (at least 1, at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, (cores - processes) // max(1, processes)))


class Examples(torch.utils.data.Dataset):
    """The splits of one dataset, indexed by (part, i, epoch): one Dataset, so one set of workers
    serves training and evaluation."""

    def __init__(self, parts: dict[str, ImageList | np.ndarray], geometry: Geometry | None, transform=None,
                 seed: int = 0):
        self.parts, self.geometry, self.transform, self.seed = parts, geometry, transform, seed

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts.values())

    def __getitem__(self, key: tuple[str, int, int | None]):
        part, i, epoch = key
        examples = self.parts[part]
        try:
            if self.transform is None or epoch is None:  # evaluation, or training without augmentation
                pixels = examples[i] if isinstance(examples, np.ndarray) else \
                    read_pixels(examples.source(i), examples.name(i), self.geometry)
                return torch.from_numpy(np.ascontiguousarray(pixels))
            return self._augmented(examples, i, epoch)
        except PtflowError as exc:
            return Bad(-1, examples.name(i) if isinstance(examples, ImageList) else f"example {i}", exc)

    def _augmented(self, examples, i: int, epoch: int) -> torch.Tensor:
        from ptflow.data.transforms import seed_example

        seed_example(self.seed, epoch, i)
        if isinstance(examples, ImageList) and hasattr(self.transform, "read"):  # crops.CropFlip: it decodes
            return self.transform.read(examples.source(i), examples.name(i))
        if isinstance(examples, ImageList) and not getattr(self.transform, "crops", True):
            # no random crop: the image as evaluation sizes it (resize, centre crop at crop_pct),
            # the pixels a split in memory holds, so both paths train alike
            return self.transform(_as_image(read_pixels(examples.source(i), examples.name(i), self.geometry)))
        return self.transform(_image(examples, i, self.geometry))


def _as_image(pixels: np.ndarray):
    """uint8 (channels, height, width) -> a PIL image, gray or RGB."""
    from PIL import Image

    return Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))


def _image(examples, i: int, geometry: Geometry | None):
    """Example i as a PIL image of the dataset's channels (gray or RGB), before any resizing (the
    training transform crops it)."""
    if isinstance(examples, np.ndarray):
        return _as_image(examples[i])
    from ptflow.data.image_files import read_image
    from ptflow.data.imaging import flatten

    image = flatten(read_image(examples.source(i), examples.name(i)))
    mode = "L" if geometry.channels == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)  # a gray photo in a colour dataset


def collate(items: list) -> tuple[torch.Tensor | None, list[Bad]]:
    """The decoded examples stacked in order, and those that could not be decoded."""
    bad = []
    for position, item in enumerate(items):
        if isinstance(item, Bad):
            item.index = position
            bad.append(item)
    good = [item for item in items if not isinstance(item, Bad)]
    return (torch.stack(good) if good else None), bad


class Plan:
    """The batches of one pass, as lists of keys; the DataLoader reads it as its batch sampler.
    Set anew for each pass, so one DataLoader (and its workers) lasts the whole run."""

    def __init__(self):
        self.batches: list[list[tuple]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _quiet_worker(_: int) -> None:
    # Each worker decodes one image at a time: torch's own threads would only compete with the
    # other workers and the training process for the same cores.
    torch.set_num_threads(1)


class Stream:
    """One DataLoader over the splits of a dataset, and the passes the training loop asks for."""

    def __init__(self, examples: Examples, workers: int, device: torch.device, bad_images):
        self.examples, self.device, self.bad_images = examples, device, bad_images
        self.plan = Plan()
        self.loader = torch.utils.data.DataLoader(
            examples, batch_sampler=self.plan, num_workers=workers, collate_fn=collate,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0,
            worker_init_fn=_quiet_worker if workers > 0 else None,
            prefetch_factor=4 if workers > 0 else None,
            # Its own generator: each pass draws the workers' base seed, which from the global RNG
            # would shift the dropout masks of a streamed run away from the same run in memory.
            generator=torch.Generator().manual_seed(examples.seed))

    def batches(self, part: str, index_lists: list, epoch: int | None = None):
        """Yield (x uint8 (n, C, H, W) on the device, kept: None or a bool mask of the batch's
        examples that decoded); index_lists: the example indices of each batch, in order."""
        self.plan.batches = [[(part, int(i), epoch) for i in index] for index in index_lists]
        for x, bad in self.loader:
            kept = None
            if bad:
                kept = self._refuse(bad, len(x) + len(bad) if x is not None else len(bad))
            yield (x.to(self.device, non_blocking=True) if x is not None else None), kept

    def _refuse(self, bad: list[Bad], size: int) -> torch.Tensor:
        kept = torch.ones(size, dtype=torch.bool)
        for item in bad:
            self.bad_images.refuse(item.name, item.error)  # --bad_images fail: stops here, one line
            kept[item.index] = False
        return kept


@dataclass
class StreamPart:
    """One split of a streamed dataset, as the training loop takes it in place of a tensor."""

    stream: Stream
    part: str  # "train", "val" or "test"
    size: int

    def __len__(self) -> int:
        return self.size

    def batches(self, index_lists: list, epoch: int | None = None):
        return self.stream.batches(self.part, index_lists, epoch)
