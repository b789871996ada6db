"""Decoding photos for training: ptflow's streaming path against timm's and torchvision's loaders.

    python bench/image_pipeline.py [--images N] [--size S] [--workers W] [--rounds R]
    python bench/image_pipeline.py --images 120 --min_side 1500 --max_side 3000 --memory_images 0  # camera size
    python bench/image_pipeline.py --profile      # cProfile of ptflow's training path, no workers

One generated folder of photo-like JPEGs (mixed sizes, by default 300-600 px a side as in
ImageNet; --min_side/--max_side for camera-size photos: gradients, shapes and noise; a few
classes), cached under the temp dir. Every contender runs the same worker count and
batch size over the same files, in alternating order, each for `--rounds` rounds (medians):
- training: decode + random resized crop S (scale 0.35-1, ptflow's `--augment light`) + flip:
  a. ptflow: formats/folder.py lists the folder, then streaming.Stream over streaming.Examples
     with transforms.train_transform (the path `ptflow train` runs: crops.CropFlip, which draws
     the box from the header and decodes a large JPEG at a reduced DCT scale);
  b. timm: create_dataset("", root) (its ImageFolder reader) + create_loader(is_training,
     scale, hflip 0.5, no colour jitter or auto-augment, bilinear, use_prefetcher=False): its
     workers also turn pixels into normalized float32 (ToTensor + Normalize);
  b'. timm uint8: the same with use_prefetcher=True, reading the DataLoader under its
     PrefetchLoader, so its workers stop at uint8 as the others do (normalizing is then the
     training process's job, on the device);
  c. torchvision: datasets.ImageFolder + DataLoader, transforms.v2 RandomResizedCrop + flip +
     PILToTensor;
  d. decode alone: PIL open + load + convert("RGB") in the same workers, the ceiling.
- evaluation: ptflow's geometry.read_pixels (S at crop 0.875, JPEG draft) against torchvision
  Resize(S / 0.875) + CenterCrop(S) + PILToTensor.
Timing: a warm-up epoch (starts the persistent workers, reads the files into the page cache),
then one epoch timed from the first request to the last batch. On shared cores wall time swings,
so each contender's per-image work (its Dataset item) is also timed in process CPU time, on one
thread in this process: the per-worker cost, whatever else runs.

Then the training process's memory as the folder grows 4x: `ptflow train --data_in_memory no` on a
folder of M and 4M images, each in a child process whose tree (the training process and its
DataLoader workers) is polled from /proc every 50 ms (psutil): peak RSS of the training process,
and peak PSS of the whole tree (PSS shares the pages workers inherit by fork among them, so the
tree's sum is not counted twice).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from train_bench import _cpu_name

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "triangle", "stripes")  # one drawn motif per class
SCALE = (0.35, 1.0)  # ptflow's --augment light (transforms.PRESETS); given to every contender
CROP_PCT = 0.875


# ---- the folder ----------------------------------------------------------------------------

def photo(rng, motif: str, sides: tuple[int, int] = (300, 600)):
    """A photo-like RGB image: a two-colour gradient, the class's motif and a few distractors, noise."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    w, h = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * np.cos(angle) + yy * np.sin(angle))
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    pixels = a * (1 - t[..., None]) + b * t[..., None]  # |pixels| = (h, w, 3)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for k in range(4):
        shape = motif if k == 0 else rng.choice(["ellipse", "rect"])
        s = int(rng.integers(min(w, h) // 6, min(w, h) // 2))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        if shape in ("circle", "ellipse"):
            draw.ellipse((x, y, x + s, y + s * (1 if shape == "circle" else 0.6)), fill=fill)
        elif shape in ("square", "rect"):
            draw.rectangle((x, y, x + s, y + s * (1 if shape == "square" else 0.5)), fill=fill)
        elif shape == "triangle":
            draw.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=fill)
        else:
            for i in range(0, s, 12):
                draw.rectangle((x + i, y, x + i + 5, y + s), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(1.0))
    noisy = np.asarray(image, np.float32) + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def folder(n: int, seed: int = 0, sides: tuple[int, int] = (300, 600)) -> Path:
    """A class folder of n JPEGs (quality 90), generated once and cached in the temp dir."""
    import numpy as np

    name = f"photos_{n}_{seed}" + ("" if sides == (300, 600) else f"_{sides[0]}-{sides[1]}px")
    root = Path(tempfile.gettempdir()) / "ptflow_image_pipeline" / name
    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    for i in range(n):
        motif = CLASSES[i % len(CLASSES)]
        (root / motif).mkdir(parents=True, exist_ok=True)
        photo(rng, motif, sides).save(root / motif / f"{i:06d}.jpg", quality=90)
    done.touch()
    return root


# ---- the contenders: each returns a callable making one epoch's batches ----------------------

def ptflow_train(root: Path, size: int, workers: int, batch: int, train: bool = True):
    import torch

    from ptflow.data.bad_images import BadImages
    from ptflow.data.formats import folder as folder_format
    from ptflow.data.geometry import Geometry
    from ptflow.data.streaming import Examples, Stream
    from ptflow.data.transforms import Augmentation, train_transform

    images = folder_format.load(root).x  # an ImageList: headers read, no pixel decoded
    transform = train_transform(Augmentation.of({"augment": "light"}, flip=True), (size, size), 3) if train else None
    examples = Examples({"train": images}, Geometry(3, (size, size), CROP_PCT), transform, seed=0)
    stream = Stream(examples, workers, torch.device("cpu"), BadImages("fail", 0.0))
    generator = torch.Generator().manual_seed(0)

    def epoch(e: int):
        order = torch.randperm(len(images), generator=generator)
        index_lists = [order[s:s + batch].tolist() for s in range(0, len(order), batch)]
        return (x for x, _ in stream.batches("train", index_lists, e if train else None))
    return epoch


def ptflow_eval(root: Path, size: int, workers: int, batch: int):
    return ptflow_train(root, size, workers, batch, train=False)


def timm_train(root: Path, size: int, workers: int, batch: int, uint8: bool = False):
    import torch
    from timm.data import create_dataset, create_loader

    dataset = create_dataset("", root=str(root), split="train", is_training=True)
    loader = create_loader(dataset, input_size=(3, size, size), batch_size=batch, is_training=True, no_aug=False,
                           scale=SCALE, hflip=0.5, color_jitter=None, auto_augment=None, interpolation="bilinear",
                           use_prefetcher=uint8, device=torch.device("cpu"), num_workers=workers)
    loader = loader.loader if uint8 else loader  # under the PrefetchLoader: what the workers make
    return lambda e: (x for x, _ in loader)


def timm_uint8(root: Path, size: int, workers: int, batch: int):
    return timm_train(root, size, workers, batch, uint8=True)


def _folder_loader(root: Path, transform, workers: int, batch: int):
    import torch
    from torchvision.datasets import ImageFolder

    loader = torch.utils.data.DataLoader(ImageFolder(str(root), transform=transform), batch_size=batch,
                                         shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    return lambda e: (x for x, _ in loader)


def torchvision_train(root: Path, size: int, workers: int, batch: int):
    from torchvision.transforms import v2

    return _folder_loader(root, v2.Compose([v2.RandomResizedCrop(size, scale=SCALE, antialias=True),
                                            v2.RandomHorizontalFlip(0.5), v2.PILToTensor()]), workers, batch)


def torchvision_eval(root: Path, size: int, workers: int, batch: int):
    from torchvision.transforms import v2

    return _folder_loader(root, v2.Compose([v2.Resize(round(size / CROP_PCT), antialias=True),
                                            v2.CenterCrop(size), v2.PILToTensor()]), workers, batch)


def _decoded_size(image):
    import torch

    return torch.tensor(image.size)  # ImageFolder's loader has opened, loaded and converted it to RGB


def decode_alone(root: Path, size: int, workers: int, batch: int):
    return _folder_loader(root, _decoded_size, workers, batch)


TRAIN = {"ptflow": ptflow_train, "timm": timm_train, "timm uint8": timm_uint8,
         "torchvision": torchvision_train, "decode alone": decode_alone}
EVAL = {"ptflow eval (read_pixels)": ptflow_eval, "torchvision eval": torchvision_eval}


def images_per_s(epoch) -> float:
    """A warm-up epoch, then one timed epoch: images per second."""
    for _ in epoch(0):
        pass
    count, started = 0, time.perf_counter()
    for x in epoch(1):
        count += len(x)
    return count / (time.perf_counter() - started)


def measure(contenders: dict, root: Path, args) -> dict[str, list[float]]:
    """images/s of each contender, `args.rounds` times in a rotating order."""
    import gc

    results = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            epoch = contenders[name](root, args.size, args.workers, args.batch_size)
            results[name].append(images_per_s(epoch))
            print(f"  round {r + 1}: {name}: {results[name][-1]:,.0f} images/s", flush=True)
            del epoch
            gc.collect()  # the persistent workers of this loader go before the next one starts
    return results


def table(results: dict[str, list[float]], workers: int, best_of: tuple[str, ...], ceiling: str | None) -> str:
    best = max(statistics.median(results[n]) for n in best_of)
    lines = ["| contender | images/s (median) | per worker | rounds | vs best of " + " / ".join(best_of)
             + (f" | vs {ceiling}" if ceiling else "") + " |", "| --- |" + " ---: |" * (5 if ceiling else 4)]
    for name, values in results.items():
        median = statistics.median(values)
        row = (f"| {name} | {median:,.0f} | {median / workers:,.0f} | {' '.join(f'{v:,.0f}' for v in values)} "
               f"| {median / best:.2f}x |")
        lines.append(row + (f" {median / statistics.median(results[ceiling]):.2f}x |" if ceiling else ""))
    return "\n".join(lines)


def cpu_per_image(root: Path, size: int) -> dict[str, float]:
    """CPU ms per image of each contender's per-example work (its Dataset's __getitem__), in this
    process on one thread: what one worker spends per image, insensitive to other load on the
    cores (process time, not wall time); batching left out."""
    import torch
    from timm.data import create_dataset, create_loader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    from ptflow.data.formats import folder as folder_format
    from ptflow.data.geometry import Geometry
    from ptflow.data.streaming import Examples
    from ptflow.data.transforms import Augmentation, train_transform

    torch.set_num_threads(1)  # as in a DataLoader worker
    images = folder_format.load(root).x
    geometry = Geometry(3, (size, size), CROP_PCT)
    light = train_transform(Augmentation.of({"augment": "light"}, flip=True), (size, size), 3)
    ptflow_train, ptflow_eval = (Examples({"train": images}, geometry, t) for t in (light, None))

    def timm_dataset(uint8: bool):
        dataset = create_dataset("", root=str(root), split="train", is_training=True)
        return create_loader(dataset, input_size=(3, size, size), batch_size=1, is_training=True, scale=SCALE,
                             hflip=0.5, color_jitter=None, auto_augment=None, interpolation="bilinear",
                             use_prefetcher=uint8, device=torch.device("cpu"), num_workers=0).dataset

    rrc = v2.Compose([v2.RandomResizedCrop(size, scale=SCALE, antialias=True), v2.RandomHorizontalFlip(0.5),
                      v2.PILToTensor()])
    center = v2.Compose([v2.Resize(round(size / CROP_PCT), antialias=True), v2.CenterCrop(size), v2.PILToTensor()])
    items = {"ptflow": lambda i: ptflow_train[("train", i, 1)], "timm": timm_dataset(False).__getitem__,
             "timm uint8": timm_dataset(True).__getitem__, "torchvision": ImageFolder(str(root), rrc).__getitem__,
             "decode alone": ImageFolder(str(root), _decoded_size).__getitem__,
             "ptflow eval (read_pixels)": lambda i: ptflow_eval[("train", i, None)],
             "torchvision eval": ImageFolder(str(root), center).__getitem__}
    n = len(images)
    out = {}
    for _ in range(2):  # the first pass also warms the imports and the page cache; the second is kept
        for name, item in items.items():
            started = time.process_time()
            for i in range(n):
                item(i)
            out[name] = 1000 * (time.process_time() - started) / n
    return out


# ---- memory as the folder grows ------------------------------------------------------------

def train_memory(root: Path, workers: int, out: Path) -> dict:
    """Peak memory of `ptflow train --data_in_memory no` on root, polled from /proc over its tree."""
    import psutil

    cmd = [sys.executable, "-m", "ptflow", "train", "--dataset", f"folder:{root}", "--data_in_memory", "no",
           "--image_size", "64", "--model", "cnn", "--n_epochs", "1", "--batch_size", "64", "--augment", "light",
           "--num_workers", str(workers), "--device", "cpu", "--runs_dir", str(out), "--seed", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    main, peak_rss, peak_tree, n_workers = psutil.Process(proc.pid), 0, 0, 0
    while proc.poll() is None:
        try:
            tree = [main] + main.children(recursive=True)
            peak_rss = max(peak_rss, main.memory_info().rss)
            pss = 0
            for p in tree:
                try:
                    pss += p.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak_tree, n_workers = max(peak_tree, pss), max(n_workers, len(tree) - 1)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    output = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{output[-2000:]}")
    return {"train_rss_mib": peak_rss / 2 ** 20, "tree_pss_mib": peak_tree / 2 ** 20, "children": n_workers,
            "wall_s": time.perf_counter() - started}


def memory_table(m: int, workers: int) -> str:
    with tempfile.TemporaryDirectory() as runs:
        small, large = (train_memory(folder(n, seed=1), workers, Path(runs)) for n in (m, 4 * m))
    lines = ["| images | training process peak RSS MiB | tree peak PSS MiB (training + workers) | children | wall s |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for n, r in ((m, small), (4 * m, large)):
        lines.append(f"| {n:,} | {r['train_rss_mib']:.0f} | {r['tree_pss_mib']:.0f} | {r['children']} "
                     f"| {r['wall_s']:.1f} |")
    lines.append(f"\n4x the images: training process RSS x{large['train_rss_mib'] / small['train_rss_mib']:.3f}, "
                 f"tree PSS x{large['tree_pss_mib'] / small['tree_pss_mib']:.3f} (target: within 1.10)")
    return "\n".join(lines)


# ---- profile ---------------------------------------------------------------------------------

def profile(root: Path, size: int, batch: int) -> None:
    """cProfile of one epoch of ptflow's training path, decoded in this process (no workers)."""
    import cProfile
    import pstats

    epoch = ptflow_train(root, size, 0, batch)
    for _ in zip(range(1), epoch(0)):  # imports and first-call costs out of the profile
        pass
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in epoch(1):
        pass
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the generated folder")
    parser.add_argument("--size", type=int, default=224, help="the training crop's side")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, every contender")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min_side", type=int, default=300, help="the generated photos' sides, at least")
    parser.add_argument("--max_side", type=int, default=600, help="the generated photos' sides, at most")
    parser.add_argument("--memory_images", type=int, default=300, help="M: train on M then 4M images (0: skip)")
    parser.add_argument("--profile", action="store_true", help="only profile ptflow's path, without workers")
    args = parser.parse_args()
    root = folder(args.images, sides=(args.min_side, args.max_side))
    if args.profile:
        return profile(root, args.size, args.batch_size)
    import timm
    import torch
    import torchvision

    load = os.getloadavg()
    print(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}, {_cpu_name()}, {os.cpu_count()} cores "
          f"({platform.node()}), Python {platform.python_version()}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, timm {timm.__version__}; load average {load[0]:.1f} at the start")
    print(f"folder: {args.images} JPEGs, {args.min_side}-{args.max_side} px a side, {len(CLASSES)} classes; "
          f"{args.workers} workers, batch {args.batch_size}, crop {args.size}")
    train = measure(TRAIN, root, args)
    evaluation = measure(EVAL, root, args)
    print(f"\nTraining (decode + random resized crop {args.size}, scale {SCALE[0]}-{SCALE[1]}, + flip), "
          f"{args.workers} workers:\n")
    print(table(train, args.workers, ("timm", "timm uint8", "torchvision"), "decode alone"))
    print(f"\nEvaluation (resize + centre crop {args.size} at {CROP_PCT}):\n")
    print(table(evaluation, args.workers, ("torchvision eval",), None))
    cpu = cpu_per_image(root, args.size)
    print("\nCPU ms per image, one thread in one process (each contender's Dataset item; process time):\n")
    print("| contender | CPU ms per image | images/s per busy core | ptflow's images/s vs it |\n"
          "| --- | ---: | ---: | ---: |")
    for name, ms in cpu.items():
        mine = cpu["ptflow eval (read_pixels)" if "eval" in name else "ptflow"]
        print(f"| {name} | {ms:.2f} | {1000 / ms:,.0f} | {ms / mine:.2f}x |")
    if args.memory_images:
        print(f"\nTraining memory, `ptflow train --data_in_memory no --image_size 64 --model cnn --n_epochs 1 "
              f"--augment light --num_workers {args.workers}`:\n")
        print(memory_table(args.memory_images, args.workers))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
