"""Fine-tuning a timm network: ptflow against timm's own train.py, and the transfer effect, offline.

    git -C PATH/pytorch-image-models show HEAD:train.py > /tmp/timm_train.py
    python bench/finetune_bench.py --timm_train /tmp/timm_train.py       # speed: on a quiet machine
    python bench/finetune_bench.py --repeats 1 --accuracy_only           # accuracy and transfer only

Matched protocol (part "match"): a generated photo folder (class sub-folders of 96 px JPEGs, train/
and test/) is fine-tuned by ptflow (fp32 and --precision bf16) and by timm's train.py (fp32) on the
same examples. The bench splits train/ with ptflow's own function, flags and seed (80% to train, 20%
to validate) and gives train.py links to exactly those files as its train/ and validation/ folders,
so both train on the same photos and validate on the same photos every epoch. The same model, image
size, batch, epochs, AdamW (lr, weight decay on every parameter: train.py is told
filter_bias_and_bn=False, as ptflow does not filter), a 1-epoch linear warmup from lr / warmup
steps then cosine to 0, both stepped per update (train.py --sched-on-updates --warmup-prefix, with
--epochs less the warmup), and augmentation (random resized crop of the file, scale 0.35-1, bilinear,
flip 0.5; nothing else; ptflow streams the files, --data_in_memory no, so that its crop is cut from
the file as train.py's is, not from an image already shrunk to the training size). Evaluation:
resize to the image size, bilinear, no crop, the model's mean/std.
Both are judged on test/ (which neither sees in training) with Wilson 95% intervals, and against
each other with McNemar's exact test: ptflow's per-example results from its predictions.npz, timm's
from its last checkpoint evaluated here by train.py's own transform (checked: it gives the validation
accuracy train.py printed). The learning rates both used at each epoch's first step are compared.
What still differs: ptflow tests the epoch with the lowest validation loss, timm's last epoch;
ptflow trains channels_last on the CPU by its own choice (train.py would need --channels-last);
their random initial weights and augmentation draws differ (each seeded); ptflow also evaluates
test/ once at the end of its run (timm's test pass runs in the bench, outside its measurements).

Speed, per contender, medians over --repeats runs in alternating order, each its own process with
the same threads and workers:
- training samples/s: both print a line per training step (ptflow --verbose 2, timm
  --log-interval 1); (steps - 1) x batch / (last step's line - first step's line), summed over
  epochs: the first step of each epoch (worker start-up) and validation are left out, by the same
  rule for both. timm's own running figure (its last "(... /s)") is printed beside it;
- CPU ms per training sample: user + system CPU seconds of the process and its loader workers
  (resource.RUSAGE_CHILDREN around the run) / (epochs x training photos). It counts all the work,
  whoever else shares the cores, so it moves far less with load than wall time; it includes both
  programs' start-up and their validation passes (the same photos for both).

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
import resource
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from train_bench import _cpu_name, timed_run

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("disc", "square", "stripes", "ring")  # shapes a small network tells apart in a few epochs
FASHION = Path("/usr/share/datasets/fashion-mnist")
LR, WEIGHT_DECAY, SEED = 1e-3, 0.05, 0  # AdamW's, for every fine-tune here
TRAIN_RATIO = 0.8  # ptflow's default: the rest of train/ validates, for both contenders


def make_photos(root: Path, per_class: int, test_per_class: int, seed: int = 0, size: int = 96) -> None:
    """root/{train,test}/CLASS/*.jpg: a coloured shape on a noisy background."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", test_per_class)):
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


def measured_run(cmd: list[str], args) -> dict:
    """timed_run, plus the CPU seconds (user + system) of the process and every child it waited
    for (its loader workers): RUSAGE_CHILDREN grows by exactly that when timed_run reaps it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = timed_run(cmd, env=_env(args))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def ptflow_split(args, photos: Path):
    """The split `ptflow train` makes of the photos: the same function, flags and seed (nothing decoded)."""
    from ptflow.data.splits import load_splits

    return load_splits(f"folder:{photos}", train_ratio=TRAIN_RATIO, seed=SEED, image_size=args.image_size,
                       crop_pct=1.0, in_memory="no")


def timm_folder(splits, root: Path) -> None:
    """root/{train,validation,test}/CLASS/: links to exactly ptflow's training, validation and test files."""
    for part, folder in (("train", "train"), ("val", "validation"), ("test", "test")):
        listed = getattr(splits, f"x_{part}")
        for file, label in zip(listed.files, listed.y.tolist()):
            target = root / folder / splits.classes[label] / Path(file).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(file).resolve())


def ptflow_cmd(args, dataset: str, runs: Path, name: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "ptflow", "train", "--dataset", dataset, "--model", f"timm:{args.model}",
            "--device", "cpu", "--num_threads", str(args.threads), "--optimizer", "adamw", "--lr", str(LR),
            "--weight_decay", str(WEIGHT_DECAY), "--scheduler", "cosine", "--seed", str(SEED),
            "--runs_dir", str(runs), "--run_name", name, *extra]


def run_ptflow(args, work: Path, splits, precision: str, tag: str) -> dict:
    from ptflow import predictions

    out = measured_run(ptflow_cmd(args, f"folder:{work / 'photos'}", work / "runs", tag, [
        "--train_ratio", str(TRAIN_RATIO), "--image_size", str(args.image_size), "--crop_pct", "1.0",
        "--interpolation", "bilinear", "--augment", "light", "--batch_size", str(args.batch),
        "--n_epochs", str(args.epochs),
        "--warmup_epochs", str(args.warmup_epochs), "--num_workers", str(args.workers),
        "--data_in_memory", args.ptflow_in_memory, "--precision", precision, "--verbose", "2"]), args)
    run = work / "runs" / tag
    kept = predictions.load(run / predictions.FILE)
    if not (kept.y_true == splits.y_test).all():
        raise RuntimeError(f"{tag}: the run's test split is not the bench's, in order")
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"rate": _ptflow_rate(out["lines"], args.batch), "cpu": out["cpu"], "wall": out["wall"],
            "correct": kept.correct.tolist(), "best_epoch": json.loads((run / "run.json").read_text())["best_epoch"],
            "lrs": [e["lr"] for e in epochs[:-1]]}  # each epoch's last lr: the next epoch's first step's


def _ptflow_rate(lines, batch: int) -> float:
    """ptflow numbers steps from 1 in each epoch: an epoch is a run of lines from step 1 on."""
    epoch, keyed = 0, []
    for t, text in lines:
        match = re.search(r"Train Iteration\((\d+)/\d+\)", text)
        if match:
            epoch += match.group(1) == "1"
            keyed.append((t, f"Train epoch {epoch} step {match.group(1)}"))
    return step_rate(keyed, r"Train epoch (\d+) step (\d+)", batch)


def timm_cmd(args, work: Path, tag: str, steps: int) -> list[str]:
    """train.py with ptflow's protocol: its warmup is a prefix (the cosine runs over the epochs after it)
    rising linearly from lr / warmup steps, per update; weight decay on every parameter, as ptflow's."""
    warmup = ["--warmup-epochs", "0"] if not args.warmup_epochs else [
        "--warmup-epochs", str(args.warmup_epochs), "--warmup-prefix",
        "--warmup-lr", str(LR / (args.warmup_epochs * steps))]
    return [sys.executable, str(args.timm_train), "--data-dir", str(work / "timm"), "--train-split", "train",
            "--val-split", "validation", "--model", args.model, "--num-classes", str(len(CLASSES)),
            "--img-size", str(args.image_size), "--crop-pct", "1.0", "--interpolation", "bilinear",
            "--batch-size", str(args.batch), "--epochs", str(args.epochs - args.warmup_epochs), *warmup,
            "--sched", "cosine", "--sched-on-updates", "--workers", str(args.workers), "--opt", "adamw",
            "--lr", str(LR), "--weight-decay", str(WEIGHT_DECAY), "--opt-kwargs", "filter_bias_and_bn=False",
            "--scale", "0.35", "1", "--hflip", "0.5", "--reprob", "0", "--mixup", "0", "--cutmix", "0",
            "--smoothing", "0", "--color-jitter", "0", "--train-interpolation", "bilinear", "--device", "cpu",
            "--log-interval", "1", "--checkpoint-hist", "1", "--seed", str(SEED),
            "--output", str(work / "timm-runs"), "--experiment", tag]


def run_timm(args, work: Path, splits, tag: str) -> dict:
    steps = len(splits.y_train) // args.batch
    out = measured_run(timm_cmd(args, work, tag, steps), args)
    own = [float(m.group(1)) for _, text in out["lines"] if (m := re.search(r"/s\)?\s+\(\S+s,\s+([0-9.]+)/s\)", text))]
    tests = [text for _, text in out["lines"] if text.split(": [")[0].endswith("Test")]
    printed = float(re.search(r"Acc@1: +[0-9.]+ \( *([0-9.]+)\)", tests[-1]).group(1)) / 100
    model = _timm_model(args, work / "timm-runs" / tag / "last.pth.tar")
    val = _timm_correct(args, model, work / "timm", splits, "val")
    if round(100 * sum(val) / len(val), 3) != round(100 * printed, 3):  # the bench's evaluation is train.py's own
        raise RuntimeError(f"{tag}: train.py printed validation acc {printed}, the bench {sum(val) / len(val)}")
    first_step = r"Train: \d+ \[ +0/.*LR: ([0-9.e+-]+)"  # each epoch's first step, and the lr it used
    firsts = [float(m.group(1)) for _, text in out["lines"] if (m := re.search(first_step, text))]
    return {"rate": step_rate(out["lines"], r"Train: (\d+) \[ *(\d+)/", args.batch), "own_rate": own[-1],
            "cpu": out["cpu"], "wall": out["wall"], "lrs": firsts[1:],
            "correct": _timm_correct(args, model, work / "timm", splits, "test")}


def _timm_model(args, checkpoint: Path):
    import timm
    import torch

    torch.set_num_threads(args.threads)
    return timm.create_model(args.model, num_classes=len(CLASSES), checkpoint_path=str(checkpoint)).eval()


def _timm_correct(args, model, root: Path, splits, part: str) -> list[bool]:
    """Which of split `part`'s photos (in ptflow's order) the model gets right, through train.py's
    own evaluation transform (resize to the image size, bilinear, crop_pct 1, the model's mean/std)."""
    import timm.data
    import torch
    from PIL import Image

    config = timm.data.resolve_data_config({"input_size": (3, args.image_size, args.image_size), "crop_pct": 1.0,
                                            "interpolation": "bilinear"}, model=model)
    transform = timm.data.create_transform(**config)
    classes = timm.data.create_dataset("", root=str(root), split="train").reader.class_to_idx
    listed = getattr(splits, f"x_{part}")
    right = []
    with torch.no_grad():
        for i in range(0, len(listed), 100):
            files = listed.files[i:i + 100]
            x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
            truth = torch.tensor([classes[splits.classes[y]] for y in listed.y[i:i + 100].tolist()])
            right += (model(x).argmax(1) == truth).tolist()
    return right


def _env(args) -> dict:
    return {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO / "src")}


def match(args, work: Path) -> dict:
    """ptflow and timm's train.py under one protocol, each contender its own process, alternating."""
    make_photos(work / "photos", args.per_class, args.test_per_class)
    splits = ptflow_split(args, work / "photos")
    if len(splits.y_train) % args.batch:
        raise SystemExit(f"{len(splits.y_train)} training photos are no whole number of batches of {args.batch}: "
                         f"choose --per_class so that {TRAIN_RATIO} x 4 x per_class is a multiple of it")
    timm_folder(splits, work / "timm")
    contenders = {"ptflow fp32": lambda tag: run_ptflow(args, work, splits, "fp32", tag),
                  "ptflow bf16": lambda tag: run_ptflow(args, work, splits, "bf16", tag),
                  "timm train.py fp32": lambda tag: run_timm(args, work, splits, tag)}
    contenders = {name: contenders[name] for name in args.contenders}  # in the order given
    results = {name: [] for name in contenders}
    for r in range(args.repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            results[name].append(contenders[name](f"{name.split()[0]}-{name.split()[-1]}-{r}"))
            last = results[name][-1]
            print(f"  {name} #{r + 1}: acc {sum(last['correct']) / len(last['correct']):.4f}, "
                  f"{last['rate']:.1f} samples/s, {last['cpu']:.0f} CPU s, {last['wall']:.0f} s", flush=True)
    return {"train_n": len(splits.y_train), "val_n": len(splits.y_val), "test_n": len(splits.y_test),
            "results": results}


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


def report(args, info: dict, match_results: dict, transfer_results: dict) -> None:
    print(f"\n{info['date']}, {info['cpu']}, {args.threads} threads, {args.workers} loader worker(s), "
          f"torch {info['torch']}, timm {info['timm']}; load average at the start {info['load']:.1f}, "
          f"at the end {os.getloadavg()[0]:.1f}\n")
    if match_results:
        _match_table(args, match_results)
    if transfer_results:
        _transfer_table(args, transfer_results)


def _match_table(args, match_results: dict) -> None:
    """Accuracy (the first run of each: seeded runs repeat it) against timm, then speed medians."""
    from statistics import median

    from ptflow.stats import mcnemar_exact, wilson_interval

    results = match_results["results"]
    base = results.get("timm train.py fp32")
    print(f"Matched protocol: timm:{args.model}, {args.image_size} px, batch {args.batch}, {args.epochs} epochs "
          f"({args.warmup_epochs} warmup), {match_results['train_n']} training / {match_results['val_n']} "
          f"validation / {match_results['test_n']} test photos, {args.repeats} run(s) each\n")
    print("| contender | test acc [95% CI] | only it right / only timm right | McNemar p |"
          + ("" if args.accuracy_only else " samples/s (median; runs) | vs timm | CPU ms/sample (median; runs) | "
             "timm / it |"))
    print("| --- | --- | ---: | ---: |" + ("" if args.accuracy_only else " ---: | ---: | ---: | ---: |"))
    for name, runs in results.items():
        right = runs[0]["correct"]
        low, high = wilson_interval(sum(right), len(right))
        row = f"| {name} | {sum(right) / len(right):.4f} [{low:.4f}, {high:.4f}] |"
        if base and name != "timm train.py fp32":
            only = sum(a and not b for a, b in zip(right, base[0]["correct"]))
            other = sum(b and not a for a, b in zip(right, base[0]["correct"]))
            row += f" {only} / {other} | {mcnemar_exact(only, other):.2g} |"
        else:
            row += " | |"
        if not args.accuracy_only:
            rate, cpu = (median(r[k] for r in runs) for k in ("rate", "cpu"))
            per = 1000 / (args.epochs * match_results["train_n"])  # CPU s per run -> ms per training sample
            each = ", ".join(f"{r['rate']:.1f}" for r in runs)
            cpus = ", ".join(f"{r['cpu'] * per:.2f}" for r in runs)
            own = f"; own {median(r['own_rate'] for r in runs):.1f}" if "own_rate" in runs[0] else ""
            vs = (f"{rate / median(r['rate'] for r in base):.2f}x",
                  f"{median(r['cpu'] for r in base) / cpu:.2f}x") if base else ("", "")
            row += f" {rate:.1f} ({each}{own}) | {vs[0]} | {cpu * per:.2f} ({cpus}) | {vs[1]} |"
        print(row)
    lrs = {name: runs[0]["lrs"] for name, runs in results.items()}
    if base and "ptflow fp32" in lrs:
        gap = max(abs(a - b) / max(a, b) for a, b in zip(lrs["ptflow fp32"], lrs["timm train.py fp32"]))
        print(f"\nlr at each epoch's first step, ptflow against train.py: largest relative difference {gap:.1e}")
    print("ptflow's kept (lowest validation loss) epoch: "
          + ", ".join(f"{name} {runs[0]['best_epoch']}" for name, runs in results.items() if "best_epoch" in runs[0]))
    if not args.accuracy_only and "ptflow bf16" in results and "ptflow fp32" in results:
        fp32, bf16 = (results[f"ptflow {p}"] for p in ("fp32", "bf16"))
        rates, cpus = ([median(r[k] for r in runs) for runs in (fp32, bf16)] for k in ("rate", "cpu"))
        print(f"ptflow bf16 / fp32: samples/s {rates[1] / rates[0]:.2f}x, CPU per sample {cpus[0] / cpus[1]:.2f}x less")


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
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the matched protocol, warmup included")
    parser.add_argument("--warmup_epochs", type=int, default=1)
    parser.add_argument("--per_class", type=int, default=480,
                        help="train/ photos per class (4 classes; 80%% of them train: a whole number of batches)")
    parser.add_argument("--ptflow_in_memory", default="no", choices=["no", "auto", "yes"],
                        help="ptflow's --data_in_memory: no streams and crops each file as train.py does")
    parser.add_argument("--test_per_class", type=int, default=250, help="test/ photos per class")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender (speed medians)")
    parser.add_argument("--contenders", nargs="+", default=["ptflow fp32", "ptflow bf16", "timm train.py fp32"],
                        choices=["ptflow fp32", "ptflow bf16", "timm train.py fp32"])
    parser.add_argument("--accuracy_only", action="store_true",
                        help="print no speed figures (a machine shared with other work)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--pretrain_epochs", type=int, default=1)
    parser.add_argument("--pretrain_n", type=int, default=30000, help="MNIST training examples to pretrain on")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000], help="Fashion-MNIST training sizes")
    parser.add_argument("--size_epochs", type=int, nargs="+", default=[15, 5], help="epochs for each of --sizes")
    parser.add_argument("--skip", choices=["match", "transfer"], help="leave one part out")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    import timm
    import torch

    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": _cpu_name(),
            "torch": torch.__version__, "timm": timm.__version__, "load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        match_results = {} if args.skip == "match" else match(args, work)
        transfer_results = {} if args.skip == "transfer" else transfer(args, work)
    report(args, info, match_results, transfer_results)
    if args.out:
        args.out.write_text(json.dumps({"info": info, "match": match_results, "transfer": transfer_results},
                                       indent=1, default=str))


if __name__ == "__main__":
    main()
