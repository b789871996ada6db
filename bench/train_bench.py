"""Training speed: ptflow against the article's code and a typical PyTorch loop, on one machine.

    python bench/train_bench.py                      # MNIST from ../shared/data/mnist, 20 epochs
    python bench/train_bench.py --epochs 3 --repeats 2 --contenders seed,ptflow

Every contender trains the article's configuration (mlp, n_layers 5, batch 256, Adam, the
given epochs) as its own process, in alternating order, so they share the machine's state.
Measured per run:
- wall: process start to test accuracy printed (for the article's code: its train.py, then its
  predict step, which is how it reports test accuracy);
- training samples/s: epochs x training examples / time from the line printed just before the
  first epoch to the last epoch line (both include each epoch's validation pass);
- peak RSS of the training process (wait4's ru_maxrss, in MiB);
- test accuracy.
It also measures the machine's ceiling: fp32 and bf16 matmul GFLOP/s, turned into the most
training samples/s the article's MLP (about 6 MFLOP per sample) could reach, and ptflow's share.
Prints a Markdown table and writes everything as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED_CODE = REPO.parent / "shared" / "reference" / "seed_code"
MLP_MACS = 784 * 630 + 630 * 476 + 476 * 322 + 322 * 168 + 168 * 10  # the article's MLP, n_layers 5
TRAIN_FLOP_PER_SAMPLE = 6 * MLP_MACS  # forward 2 FLOP per MAC, backward twice that


def timed_run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run a command, timestamping each stdout line; returns lines, wall time and peak RSS."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - started, line.rstrip("\n")))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(text for _, text in lines[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return {"lines": lines, "wall": wall, "rss_mb": usage.ru_maxrss / 1024}


def training_seconds(lines: list[tuple[float, str]]) -> float:
    """From the line printed just before the first epoch line to the last epoch line."""
    epochs = [i for i, (_, text) in enumerate(lines) if text.startswith("Epoch(")]
    if not epochs:
        raise RuntimeError("no epoch lines in the output")
    return lines[epochs[-1]][0] - lines[epochs[0] - 1][0]


def find_accuracy(lines: list[tuple[float, str]]) -> float:
    for _, text in reversed(lines):
        match = re.search(r"(?:Test accuracy|Accuracy): ([0-9.]+)", text)
        if match:
            return float(match.group(1))
    raise RuntimeError("no accuracy in the output")


def run_seed(args, workdir: Path) -> dict:
    env = {"MNIST_DIR": str(args.data_dir)}
    model_fn = workdir / "seed.pth"
    # On a GPU the article's split_data fails as published (a CPU index into CUDA tensors):
    # seed_on_cuda.py moves that one index and runs the script otherwise unchanged.
    launcher = [] if args.device == "cpu" else [str(REPO / "bench" / "seed_on_cuda.py")]
    train = timed_run([sys.executable, *launcher, "train.py", "--model_fn", str(model_fn), "--gpu_id",
                       "-1" if args.device == "cpu" else "0", "--batch_size", "256", "--n_epochs",
                       str(args.epochs), "--n_layers", "5"], cwd=args.seed_code, env=env)
    test = timed_run([sys.executable, "predict_eval.py", str(model_fn)], cwd=args.seed_code, env=env)
    return {"wall": train["wall"] + test["wall"], "rss_mb": max(train["rss_mb"], test["rss_mb"]),
            "train_seconds": training_seconds(train["lines"]), "test_acc": find_accuracy(test["lines"])}


def run_typical(args, workdir: Path) -> dict:
    out = timed_run([sys.executable, str(REPO / "bench" / "typical_loop.py"), "--data_dir", str(args.data_dir),
                     "--epochs", str(args.epochs), "--device", args.device])
    return {"wall": out["wall"], "rss_mb": out["rss_mb"], "train_seconds": training_seconds(out["lines"]),
            "test_acc": find_accuracy(out["lines"])}


def run_ptflow(args, workdir: Path, precision: str = "fp32", src: Path | None = None) -> dict:
    """ptflow's train; src: another checkout's src/ folder to run instead (an A/B of two versions)."""
    out = timed_run([sys.executable, "-m", "ptflow", "train", "--dataset", "mnist", "--data_dir",
                     str(args.data_dir), "--n_epochs", str(args.epochs), "--batch_size", "256",
                     "--n_layers", "5", "--device", args.device, "--precision", precision,
                     "--runs_dir", str(workdir / "runs"), "--verbose", "1"],
                    env={"PYTHONPATH": str(src)} if src else None)
    return {"wall": out["wall"], "rss_mb": out["rss_mb"], "train_seconds": training_seconds(out["lines"]),
            "test_acc": find_accuracy(out["lines"])}


CONTENDERS = {
    "seed": ("the article's code", run_seed),
    "typical": ("typical loop (DataLoader, loss.item())", run_typical),
    "ptflow": ("ptflow fp32", run_ptflow),
    "ptflow-bf16": ("ptflow --precision bf16", lambda a, w: run_ptflow(a, w, "bf16")),
    "baseline": ("ptflow fp32, --baseline_src", lambda a, w: run_ptflow(a, w, src=a.baseline_src)),
}


def matmul_gflops(dtype_name: str, device: str, size: int = 2048, seconds: float = 2.0) -> float:
    import torch

    dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype_name])
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        n += 1
    sync()
    return 2 * size ** 3 * n / (time.perf_counter() - started) / 1e9


def measure_ceiling(device: str) -> dict:
    """The matmul ceilings, measured in a child process.

    This process must never import torch: Linux carries a parent's resident memory into the
    peak RSS (ru_maxrss) of every child it forks, so a parent holding torch and the test
    matrices would add ~400 MB to each contender's measured peak.
    """
    out = subprocess.run([sys.executable, __file__, "--ceiling_only", "--device", device],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def help_latency(repeats: int = 5) -> float:
    """Best of several `ptflow --help` wall times, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ptflow", "--help"], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def summarise(results: dict[str, list[dict]], n_train: int, epochs: int) -> dict[str, dict]:
    """Median of each measure over the repeats (the mean of the middle two for an even count)."""
    summary = {}
    for name, runs in results.items():
        summary[name] = {
            "wall": statistics.median([r["wall"] for r in runs]),
            "samples_per_s": statistics.median([n_train * epochs / r["train_seconds"] for r in runs]),
            "rss_mb": statistics.median([r["rss_mb"] for r in runs]),
            "test_acc": statistics.median([r["test_acc"] for r in runs]),
            "runs": runs,
        }
    return summary


def table(summary: dict, ceiling: dict) -> str:
    rows = ["| contender | wall s | train samples/s | peak RSS MiB | test acc | speed vs article | wall vs article "
            "| speed vs typical | share of fp32 ceiling |", "|" + " --- |" * 9]
    seed, typical = summary.get("seed"), summary.get("typical")
    for name, s in summary.items():
        speed_seed = f"{s['samples_per_s'] / seed['samples_per_s']:.2f}x" if seed else "-"
        wall_seed = f"{seed['wall'] / s['wall']:.2f}x" if seed else "-"
        speed_typ = f"{s['samples_per_s'] / typical['samples_per_s']:.2f}x" if typical else "-"
        share = f"{s['samples_per_s'] / ceiling['fp32_samples_per_s']:.0%}"
        rows.append(f"| {CONTENDERS[name][0]} | {s['wall']:.1f} | {s['samples_per_s']:,.0f} | {s['rss_mb']:.0f} | "
                    f"{s['test_acc']:.4f} | {speed_seed} | {wall_seed} | {speed_typ} | {share} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of alternating runs (medians reported)")
    parser.add_argument("--contenders", default="seed,typical,ptflow,ptflow-bf16")
    parser.add_argument("--baseline_src", type=Path, help="another ptflow's src/ folder: contender `baseline`")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed_code", type=Path, default=SEED_CODE, help="the article's code (its train.py)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "train_bench.json")
    parser.add_argument("--render", type=Path, metavar="JSON", help="print the tables of an earlier run's JSON")
    parser.add_argument("--ceiling_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Absolute: the article's code runs from its own folder.
    args.data_dir, args.seed_code = args.data_dir.resolve(), args.seed_code.resolve()
    if args.ceiling_only:  # the child process of measure_ceiling
        import torch

        print(json.dumps({"fp32": matmul_gflops("fp32", args.device), "bf16": matmul_gflops("bf16", args.device),
                          "threads": torch.get_num_threads(), "torch": str(torch.__version__)}))
        return
    if args.render:
        info = json.loads(args.render.read_text())
        summary = summarise({k: v["runs"] for k, v in info["summary"].items()}, 48000, info["epochs"])
        report(info, summary, info["ceiling"], info["help_seconds"])
        return
    names = [n for n in args.contenders.split(",") if n]
    if "seed" in names and not (args.seed_code / "train.py").exists():
        print(f"note: the article's code is not at {args.seed_code}; skipping that baseline")
        names.remove("seed")
    if not any((args.data_dir / name).exists() for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")):
        raise SystemExit(f"MNIST not found in {args.data_dir} (pass --data_dir)")

    machine = measure_ceiling(args.device)
    ceiling = {p: machine[p] for p in ("fp32", "bf16")}
    ceiling.update({f"{p}_samples_per_s": ceiling[p] * 1e9 / TRAIN_FLOP_PER_SAMPLE for p in ("fp32", "bf16")})
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            order = names if round_ % 2 == 0 else names[::-1]  # alternate, so no one always runs first
            for name in order:
                print(f"round {round_ + 1}/{args.repeats}: {name} ...", flush=True)
                results[name].append(CONTENDERS[name][1](args, Path(tmp)))
    summary = summarise(results, n_train=48000, epochs=args.epochs)
    help_s = help_latency()
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
            "cpu": _cpu_name(), "threads": machine["threads"], "torch": machine["torch"],
            "device": args.device, "epochs": args.epochs, "repeats": args.repeats,
            "command": " ".join(sys.argv), "ceiling": ceiling, "help_seconds": help_s,
            "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(info, indent=2))
    report(info, summary, ceiling, help_s)
    print(f"wrote {args.out}")


def report(info: dict, summary: dict, ceiling: dict, help_s: float) -> None:
    print(f"\n{info['date']}, {info['cpu']}, {info['threads']} threads, torch {info['torch']}, "
          f"{info['epochs']} epochs, median of {info['repeats']}\n")
    print(table(summary, ceiling))
    print(f"\nceiling: fp32 {ceiling['fp32']:.0f} GFLOP/s -> {ceiling['fp32_samples_per_s']:,.0f} samples/s; "
          f"bf16 {ceiling['bf16']:.0f} GFLOP/s -> {ceiling['bf16_samples_per_s']:,.0f} samples/s "
          f"(article's MLP, {TRAIN_FLOP_PER_SAMPLE / 1e6:.1f} MFLOP per training sample)")
    print(f"`ptflow --help`: {help_s * 1000:.0f} ms (best of 5)")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
