"""Fine-tuning a timm network: ptflow against timm's own train.py, and the transfer effect, offline.

    git -C PATH/pytorch-image-models show HEAD:train.py > /tmp/timm_train.py
    python bench/finetune_bench.py --timm_train /tmp/timm_train.py     # ~15-20 min on 2 cores

Speed (one run, contenders alternating, each its own process, the same threads and workers):
a generated photo folder (class sub-folders of 96 px JPEGs, train/ and validation/) is fine-tuned
by ptflow (fp32 and --precision bf16) and by timm's train.py (fp32) on the same model, image size,
batch, epochs, optimizer, schedule and augmentation (random resized crop, scale 0.35-1, bilinear,
flip 0.5; nothing else). Both print a line per training step (ptflow --verbose 2, timm
--log-interval 1); training samples/s = (steps - 1) x batch / (last step's line - first step's line),
summed over epochs: the first step of each epoch (worker start-up) and validation are left out,
by the same rule for both. timm's own running figure (its last "(... /s)") is printed beside it.
Accuracy is on the validation/ folder (ptflow reads it as its test split) with Wilson 95% intervals.
Differences the two leave: ptflow holds 20% of train/ out to validate (--train_ratio 0.8) and tests
the epoch with the lowest validation loss; timm trains on all of train/ and reports its last epoch.
ptflow's cosine schedule steps every batch, timm's every epoch.

Transfer: the same network is pretrained briefly on MNIST by ptflow; its weights minus the classifier
head become --pretrained_path for fine-tuning on Fashion-MNIST subsets of 1,000 and 5,000 training
examples (npz files: a stratified draw, the full 10,000-image test split), against the same
network from scratch with the same flags and epochs. Test accuracy with 95% intervals, and
McNemar's exact test between the two from `ptflow runs compare --json`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from train_bench import _cpu_name, timed_run

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("disc", "square", "stripes", "ring")  # shapes a small network tells apart in a few epochs
FASHION = Path("/usr/share/datasets/fashion-mnist")


def make_photos(root: Path, per_class: int, seed: int = 0, size: int = 96) -> None:
    """root/{train,validation}/CLASS/*.jpg: a coloured shape on a noisy background; 5/16 as many to validate."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("validation", per_class * 5 // 16)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.normal(0, 25, (size, size, 3)) + rng.integers(0, 256, 3)
                image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
                _draw_shape(ImageDraw.Draw(image), c, rng, size)
                image.save(folder / f"{i:05d}.jpg", quality=90)


def _draw_shape(draw, c: int, rng, size: int) -> None:
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    # large and central: a random resized crop of a third of the image still shows most of the shape
    x, y = (int(v) for v in rng.integers(size // 3, size - size // 3, 2))
    r = int(rng.integers(size // 6, size // 3))
    box = [x - r, y - r, x + r, y + r]
    if c == 0:
        draw.ellipse(box, fill=colour)
    elif c == 1:
        draw.rectangle(box, fill=colour)
    elif c == 2:
        for k in range(-2, 3):
            draw.line([x - r, y + r * k // 3, x + r, y + r * k // 3], fill=colour, width=3)
    else:
        draw.ellipse(box, outline=colour, width=4)


def step_rate(lines, pattern: str, batch: int) -> float:
    """Training samples/s from per-step lines: pattern's groups are (epoch key, step index)."""
    epochs: dict[str, list[float]] = {}
    for t, text in lines:
        match = re.search(pattern, text)
        if match:
            epochs.setdefault(match.group(1), []).append(t)
    if not epochs:
        raise RuntimeError(f"no training step lines matching {pattern!r}")
    samples = sum((len(ts) - 1) * batch for ts in epochs.values())
    return samples / sum(ts[-1] - ts[0] for ts in epochs.values())


def ptflow_cmd(args, dataset: str, runs: Path, name: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "ptflow", "train", "--dataset", dataset, "--model", f"timm:{args.model}",
            "--device", "cpu", "--num_threads", str(args.threads), "--optimizer", "adamw", "--lr", "1e-3",
            "--weight_decay", "0.05", "--scheduler", "cosine", "--seed", "0",
            "--runs_dir", str(runs), "--run_name", name, *extra]


def run_ptflow_speed(args, work: Path, precision: str, tag: str) -> dict:
    out = timed_run(ptflow_cmd(args, f"folder:{work / 'pt'}", work / "runs", tag, [
        "--image_size", str(args.image_size), "--augment", "light", "--batch_size", str(args.batch),
        "--n_epochs", str(args.epochs), "--num_workers", str(args.workers), "--precision", precision,
        "--verbose", "2"]), env=_env(args))
    run = json.loads((work / "runs" / tag / "run.json").read_text())
    return {"rate": _ptflow_rate(out["lines"], args.batch), "acc": run["test_acc"], "ci": run["test_acc_ci95"],
            "n": run["test_n"], "wall": out["wall"]}


def _ptflow_rate(lines, batch: int) -> float:
    """ptflow numbers steps from 1 in each epoch: an epoch is a run of lines from step 1 on."""
    epoch, keyed = 0, []
    for t, text in lines:
        match = re.search(r"Train Iteration\((\d+)/\d+\)", text)
        if match:
            epoch += match.group(1) == "1"
            keyed.append((t, f"Train epoch {epoch} step {match.group(1)}"))
    return step_rate(keyed, r"Train epoch (\d+) step (\d+)", batch)


def run_timm_speed(args, work: Path, tag: str) -> dict:
    from ptflow.stats import wilson_interval

    out = timed_run([sys.executable, str(args.timm_train), "--data-dir", str(work / "photos"),
                     "--model", args.model, "--num-classes", str(len(CLASSES)), "--img-size", str(args.image_size),
                     "--crop-pct", "1.0", "--batch-size", str(args.batch), "--epochs", str(args.epochs),
                     "--workers", str(args.workers), "--opt", "adamw", "--lr", "1e-3", "--weight-decay", "0.05",
                     "--sched", "cosine", "--warmup-epochs", "0", "--scale", "0.35", "1", "--hflip", "0.5",
                     "--reprob", "0", "--mixup", "0", "--cutmix", "0", "--smoothing", "0",
                     "--color-jitter", "0", "--train-interpolation", "bilinear", "--device", "cpu",
                     "--log-interval", "1", "--checkpoint-hist", "1", "--seed", "0",
                     "--output", str(work / "timm" / tag)], env=_env(args))
    own = [float(m.group(1)) for _, text in out["lines"] if (m := re.search(r"/s\)?\s+\(\S+s,\s+([0-9.]+)/s\)", text))]
    tests = [text for _, text in out["lines"] if text.split(": [")[0].endswith("Test")]
    acc = float(re.search(r"Acc@1: +[0-9.]+ \( *([0-9.]+)\)", tests[-1]).group(1)) / 100
    n = len(CLASSES) * len(list((work / "photos" / "validation" / CLASSES[0]).iterdir()))
    return {"rate": step_rate(out["lines"], r"Train: (\d+) \[ *(\d+)/", args.batch), "own_rate": own[-1],
            "acc": acc, "ci": list(wilson_interval(round(acc * n), n)), "n": n, "wall": out["wall"]}


def _env(args) -> dict:
    return {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO / "src")}


def speed(args, work: Path) -> dict:
    make_photos(work / "photos", args.per_class)
    (work / "pt").mkdir()
    (work / "pt" / "train").symlink_to(work / "photos" / "train")
    (work / "pt" / "test").symlink_to(work / "photos" / "validation")  # ptflow's test split: timm's validation
    contenders = {"ptflow fp32": lambda tag: run_ptflow_speed(args, work, "fp32", tag),
                  "ptflow bf16": lambda tag: run_ptflow_speed(args, work, "bf16", tag),
                  "timm train.py fp32": lambda tag: run_timm_speed(args, work, tag)}
    results = {name: [] for name in contenders}
    for r in range(args.repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            results[name].append(contenders[name](f"{name.split()[0]}-{name.split()[-1]}-{r}"))
            print(f"  {name} #{r + 1}: {results[name][-1]['rate']:.1f} samples/s", flush=True)
    return results


def idx_npz(source: Path, path: Path, n: int, seed: int = 0) -> None:
    """An IDX dataset's n training examples drawn per class in equal shares (seeded), and its full test split."""
    import numpy as np

    def read(name, offset):
        return np.frombuffer(gzip.open(source / f"{name}.gz").read(), np.uint8, offset=offset)

    x, y = read("train-images-idx3-ubyte", 16).reshape(-1, 28, 28), read("train-labels-idx1-ubyte", 8)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), n // 10, replace=False) for c in range(10)])
    np.savez(path, x=x[pick], y=y[pick], x_test=read("t10k-images-idx3-ubyte", 16).reshape(-1, 28, 28),
             y_test=read("t10k-labels-idx1-ubyte", 8))


def transfer(args, work: Path) -> dict:
    from safetensors.torch import load_file, save_file

    runs = work / "transfer"
    idx_npz(args.mnist, work / "mnist.npz", args.pretrain_n)  # a share of MNIST: the bench's time budget
    out = timed_run(ptflow_cmd(args, f"npz:{work / 'mnist.npz'}", runs, "mnist", [
        "--n_epochs", str(args.pretrain_epochs), "--batch_size", "128"]), env=_env(args))
    pre = json.loads((runs / "mnist" / "run.json").read_text())
    print(f"  MNIST pretraining: test acc {pre['test_acc']:.4f}, {out['wall']:.0f} s", flush=True)
    weights = load_file(runs / "mnist" / "model.safetensors")
    backbone = work / "mnist_backbone.safetensors"  # the digit head means nothing for clothes: left out
    save_file({k: v for k, v in weights.items() if not k.startswith("fc.")}, backbone)
    results = {"pretrain_acc": pre["test_acc"], "pretrain_wall": out["wall"]}
    for n, epochs in zip(args.sizes, args.size_epochs):
        data = work / f"fashion{n}.npz"
        idx_npz(FASHION, data, n)
        names = []
        for start, extra in (("pretrained", ["--pretrained_path", str(backbone)]), ("scratch", [])):
            names.append(f"fashion{n}-{start}")
            timed_run(ptflow_cmd(args, f"npz:{data}", runs, names[-1], [
                "--n_epochs", str(epochs), "--batch_size", "64", "--warmup_epochs", "1", *extra]), env=_env(args))
        compare = subprocess.run([sys.executable, "-m", "ptflow", "runs", "compare", "--json", "--runs_dir",
                                  str(runs), *names], capture_output=True, text=True, env={**os.environ, **_env(args)})
        if compare.returncode:
            raise RuntimeError(compare.stderr)
        results[n] = {"epochs": epochs, "compare": json.loads(compare.stdout),
                      "runs": {name: json.loads((runs / name / "run.json").read_text()) for name in names}}
        print(f"  Fashion-MNIST {n}: done", flush=True)
    return results


def report(args, info: dict, speed_results: dict, transfer_results: dict) -> None:
    print(f"\n{info['date']}, {info['cpu']}, {args.threads} threads, {args.workers} loader worker(s), "
          f"torch {info['torch']}, timm {info['timm']}; load average at the end {os.getloadavg()[0]:.1f}")
    print("(2 cores shared with a running test suite: absolute figures are low and noisy; the ratios "
          "come from contenders alternating in one run)\n")
    if speed_results:
        _speed_table(args, speed_results)
    if transfer_results:
        _transfer_table(args, transfer_results)


def _speed_table(args, speed_results: dict) -> None:
    from statistics import median

    base = median(r["rate"] for r in speed_results["timm train.py fp32"])
    print(f"Speed: timm:{args.model}, {args.image_size} px, batch {args.batch}, {args.epochs} epochs, "
          f"{args.per_class * len(CLASSES)} training images, {args.repeats} runs each\n")
    print("| contender | training samples/s (median; runs) | vs timm | timm's own figure | test acc [95% CI] |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, runs in speed_results.items():
        rate = median(r["rate"] for r in runs)
        own = "" if "own_rate" not in runs[0] else f"{median(r['own_rate'] for r in runs):.1f}"
        accs = "; ".join(f"{r['acc']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] (n={r['n']})" for r in runs)
        each = ", ".join(f"{r['rate']:.1f}" for r in runs)
        print(f"| {name} | {rate:.1f} ({each}) | "
              f"{rate / base:.2f}x | {own} | {accs} |")
    fp32 = median(r["rate"] for r in speed_results["ptflow fp32"])
    print(f"\nptflow bf16 / fp32: {median(r['rate'] for r in speed_results['ptflow bf16']) / fp32:.2f}x")


def _transfer_table(args, transfer_results: dict) -> None:
    print(f"\nTransfer: MNIST pretraining ({args.pretrain_n:,} examples, {args.pretrain_epochs} epoch(s)) test acc "
          f"{transfer_results['pretrain_acc']:.4f} in {transfer_results['pretrain_wall']:.0f} s\n")
    print("| Fashion-MNIST train examples | epochs | from MNIST weights | from scratch | "
          "only pretrained right / only scratch right | McNemar p |")
    print("| ---: | ---: | --- | --- | ---: | ---: |")
    for n in args.sizes:
        r = transfer_results[n]
        accs = [f"{run['test_acc']:.4f} [{run['test_acc_ci95'][0]:.4f}, {run['test_acc_ci95'][1]:.4f}]"
                for run in r["runs"].values()]
        pair = _pair(r["compare"])
        print(f"| {n:,} | {r['epochs']} | {accs[0]} | {accs[1]} | {pair} |")


def _pair(compare: dict) -> str:
    """The McNemar counts and p-value of `ptflow runs compare --json`'s one pair."""
    if not compare["significance"]:
        return f"(not compared: {'; '.join(compare['notes'])}) |"
    p = compare["significance"][0]
    return f"{p['only_a']} / {p['only_b']} | {p['p_value']:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timm_train", type=Path, default=Path("/tmp/timm_train.py"), help="timm's train.py")
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per_class", type=int, default=320, help="training photos per class (4 classes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--pretrain_epochs", type=int, default=2)
    parser.add_argument("--pretrain_n", type=int, default=30000, help="MNIST training examples to pretrain on")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000], help="Fashion-MNIST training sizes")
    parser.add_argument("--size_epochs", type=int, nargs="+", default=[30, 10], help="epochs for each of --sizes")
    parser.add_argument("--skip", choices=["speed", "transfer"], help="leave one part out")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    import timm
    import torch

    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": _cpu_name(),
            "torch": torch.__version__, "timm": timm.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        speed_results = {} if args.skip == "speed" else speed(args, work)
        transfer_results = {} if args.skip == "transfer" else transfer(args, work)
    report(args, info, speed_results, transfer_results)
    if args.out:
        args.out.write_text(json.dumps({"info": info, "speed": speed_results, "transfer": transfer_results},
                                       indent=1, default=str))


if __name__ == "__main__":
    main()
