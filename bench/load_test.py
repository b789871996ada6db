"""Load test for `ptflow serve` over loopback: throughput and latency, batched vs unbatched, 1 or 2 workers.

Starts the server as its own process (once per mode), then drives it from this process with a
lean asyncio client: one keep-alive HTTP/1.1 connection per concurrent user, raw sockets, each
request a single-input JSON body. Latency is timed from the *intended* send time: in the default
closed loop that is when the user's previous answer arrived; with --rate R (an open loop at R
requests/s in all) it is the request's slot in the schedule, so a stalled server is charged for
the requests it delayed (no coordinated omission).

    python bench/load_test.py --model_fn mnist.safetensors
    python bench/load_test.py --model_fn mnist.safetensors --concurrency 16 --duration 10 --modes batched
    python bench/load_test.py --model_fn mnist.safetensors --modes batched,workers2   # 1 vs 2 worker processes
    python bench/load_test.py --model_fn mnist.safetensors --modes batched,baseline --baseline_src ../old/src  # A/B

Prints a Markdown table and writes the numbers as JSON (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

import numpy as np

MODES = {"batched": [], "unbatched": ["--max_batch_size", "1"], "workers2": ["--workers", "2"],
         "baseline": []}  # baseline: batched, served by the ptflow in --baseline_src (an A/B of two versions)
TARGETS = "c=16: >= 1500 req/s, p99 <= 25 ms, 0 errors; c=64: batched >= 1.3x unbatched; c=1: p50 <= 3 ms"


def start_server(model_fn: str, extra: list[str], src: str | None = None) -> tuple[subprocess.Popen, str]:
    """`ptflow serve` on a free port, once ready; src: another ptflow's src/ folder to run instead."""
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    command = [sys.executable, "-m", "ptflow", "serve", "--model_fn", model_fn, "--port", "0", *extra]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in server.stdout:
        match = re.search(r"http://[\d.]+:\d+", line)
        if match:
            url = match.group(0)
            break
    else:
        raise SystemExit(f"the server did not start: {server.wait()}")
    for _ in range(600):  # ready = loaded and warmed up (with several workers, each accepts once warm)
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=60) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("the server never became ready")


def request_bytes(url: str, n: int = 256, seed: int = 0) -> tuple[list[bytes], dict]:
    """Pre-encoded single-input requests: MNIST-like sparse images, values pixels / 255."""
    with urllib.request.urlopen(url + "/v1/model") as response:
        model = json.load(response)
    size = int(np.prod(model["input_shape"]))
    rng = np.random.default_rng(seed)
    host = url.split("//")[1]
    requests = []
    for _ in range(n):
        pixels = np.where(rng.random(size) < 0.19, rng.integers(1, 256, size), 0)  # MNIST: ~19% ink
        values = ",".join("0" if p == 0 else f"{p / 255:.4f}" for p in pixels)
        body = ('{"inputs":[[' + values + "]]}").encode()
        head = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        requests.append(head + body)
    return requests, model


async def user(host: str, port: int, requests: list[bytes], offset: int, start: float, stop: float,
               interval: float | None, out: list) -> None:
    """One connection sending requests back to back (interval None) or on a fixed schedule."""
    reader, writer = await asyncio.open_connection(host, port)
    i, intended = offset, start + (interval or 0) * offset / max(1, len(requests))
    try:
        while intended < stop:
            now = time.perf_counter()
            if interval is None:
                intended = now
            elif intended > now:
                await asyncio.sleep(intended - now)
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
            await reader.readexactly(length)
            done = time.perf_counter()
            out.append((intended, done - intended, head.startswith(b"HTTP/1.1 200")))
            i += 1
            if interval is not None:
                intended += interval
    except (OSError, asyncio.IncompleteReadError, AttributeError):
        out.append((intended, time.perf_counter() - intended, False))
    finally:
        writer.close()


async def load(url: str, requests: list[bytes], concurrency: int, warmup: float, duration: float,
               rate: float | None) -> dict:
    host, port = url.split("//")[1].split(":")
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + duration
    interval = concurrency / rate if rate else None
    out: list = []
    await asyncio.gather(*(user(host, int(port), requests, k * 7, start, stop, interval, out)
                           for k in range(concurrency)))
    window = [(latency, ok) for intended, latency, ok in out if measure_from <= intended < stop]
    latencies = np.array([latency for latency, ok in window if ok]) * 1000
    errors = sum(not ok for _, ok in window)
    p = np.percentile(latencies, [50, 90, 99]) if len(latencies) else [float("nan")] * 3
    return {"concurrency": concurrency, "requests": len(window), "errors": errors,
            "rps": round(len(latencies) / duration, 1), "p50_ms": round(float(p[0]), 2),
            "p90_ms": round(float(p[1]), 2), "p99_ms": round(float(p[2]), 2),
            "max_ms": round(float(latencies.max()), 2) if len(latencies) else None}


def batch_totals(url: str) -> tuple[float, float]:
    """(rows, forward passes) so far, from the server's Prometheus batch-size histogram."""
    with urllib.request.urlopen(url + "/metrics") as response:
        text = response.read().decode()
    rows = re.search(r"^ptflow_batch_size_sum (\S+)", text, re.M)
    passes = re.search(r"^ptflow_batch_size_count (\S+)", text, re.M)
    return float(rows.group(1)), float(passes.group(1))


def table(rows: list[dict]) -> str:
    lines = ["| mode | concurrency | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | mean batch |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['rps']:,.0f} | {r['p50_ms']} | {r['p90_ms']} | "
                     f"{r['p99_ms']} | {r['max_ms']} | {r['errors']} | {r['mean_batch']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_fn", required=True)
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels (default: 1,16,64)")
    parser.add_argument("--modes", default="batched,unbatched", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level")
    parser.add_argument("--rate", type=float, default=None, help="open loop at this many requests/s in all")
    parser.add_argument("--server_args", default="", help="extra `ptflow serve` flags, e.g. '--max_wait_ms 1'")
    parser.add_argument("--out", default="bench/serve_results.json", help="JSON results file")
    parser.add_argument("--baseline_src", help="another ptflow's src/ folder, served in mode `baseline`")
    args = parser.parse_args()
    if "baseline" in args.modes.split(",") and not args.baseline_src:
        parser.error("mode baseline needs --baseline_src")
    try:
        import uvloop

        uvloop.install()  # the client's own overhead is part of the measurement: keep it small
    except ImportError:
        pass
    rows = []
    for mode in args.modes.split(","):
        src = args.baseline_src if mode == "baseline" else None
        server, url = start_server(args.model_fn, MODES[mode] + args.server_args.split(), src)
        try:
            requests, model = request_bytes(url)
            for concurrency in map(int, args.concurrency.split(",")):
                rows_before, passes_before = batch_totals(url)
                row = asyncio.run(load(url, requests, concurrency, args.warmup, args.duration, args.rate))
                rows_after, passes_after = batch_totals(url)
                mean_batch = (rows_after - rows_before) / max(1.0, passes_after - passes_before)
                rows.append({"mode": mode, **row, "mean_batch": round(mean_batch, 2)})
                print(f"{mode:9} c={concurrency:<3} {row['rps']:8,.0f} req/s  p50 {row['p50_ms']} ms  "
                      f"p99 {row['p99_ms']} ms  errors {row['errors']}", flush=True)
        finally:
            server.terminate()
            server.wait(10)
    print()
    print(table(rows))
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "model": {k: model[k] for k in ("name", "architecture", "input_shape", "id")},
              "request_bytes": len(requests[0]), "command": " ".join(sys.argv), "targets": TARGETS, "rows": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
