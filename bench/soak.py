"""Soak test for `ptflow serve`: a long run at ~70% of measured capacity, minute by minute.

Starts the server, measures its capacity (closed loop, 16 concurrent users, one-input JSON
requests as in load_test.py), then holds an open-loop rate of --load (default 0.7) times that
for --minutes, timing each request from its scheduled send time (no coordinated omission).
Every few seconds it samples the resident memory of the server's processes (the server, its
workers and decoders, summed from /proc). Reports, per minute, requests, errors, throughput and
latency percentiles, and checks the soak's three promises: no errors, the last minute's p99
within 1.5x the first's, and memory growth under 10% from the first minute's end to the last's.

    python bench/soak.py --model_fn mnist.safetensors --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from datetime import datetime, timezone

import numpy as np
from load_test import load, request_bytes, start_server, user


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants, summed (shared pages count in each)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    family, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    total = 0
    for p in family:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def sample_memory(pid: int, every: float, stop: threading.Event, out: list) -> None:
    start = time.perf_counter()
    while not stop.is_set():
        out.append((time.perf_counter() - start, rss_bytes(pid)))
        stop.wait(every)


async def hold_rate(url: str, requests: list[bytes], rate: float, seconds: float, users: int) -> list:
    host, port = url.split("//")[1].split(":")
    start = time.perf_counter()
    out: list = []
    await asyncio.gather(*(user(host, int(port), requests, k * 7, start, start + seconds, users / rate, out)
                           for k in range(users)))
    return [(intended - start, latency, ok) for intended, latency, ok in out]


def per_minute(samples: list, minutes: int) -> list[dict]:
    rows = []
    for m in range(minutes):
        window = [(latency, ok) for t, latency, ok in samples if m * 60 <= t < (m + 1) * 60]
        ms = np.array([latency for latency, ok in window if ok]) * 1000
        p50, p99 = np.percentile(ms, [50, 99]) if len(ms) else (float("nan"),) * 2
        rows.append({"minute": m + 1, "requests": len(window), "errors": sum(not ok for _, ok in window),
                     "rps": round(len(ms) / 60, 1), "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2),
                     "max_ms": round(float(ms.max()), 2) if len(ms) else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_fn", required=True)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of the measured capacity to hold")
    parser.add_argument("--users", type=int, default=32, help="connections sharing the open-loop schedule")
    parser.add_argument("--server_args", default="", help="extra `ptflow serve` flags, e.g. '--workers 2'")
    parser.add_argument("--out", default="bench/soak_results.json")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    server, url = start_server(args.model_fn, args.server_args.split())
    memory: list = []
    stop = threading.Event()
    try:
        requests, model = request_bytes(url)
        capacity = asyncio.run(load(url, requests, 16, 2.0, 10.0, None))
        rate = round(args.load * capacity["rps"], 1)
        print(f"capacity {capacity['rps']:,.0f} req/s (p99 {capacity['p99_ms']} ms); holding {rate:,.0f} req/s "
              f"for {args.minutes} min", flush=True)
        sampler = threading.Thread(target=sample_memory, args=(server.pid, 5.0, stop, memory), daemon=True)
        sampler.start()
        samples = asyncio.run(hold_rate(url, requests, rate, args.minutes * 60.0, args.users))
    finally:
        stop.set()
        server.terminate()
        server.wait(30)
    rows = per_minute(samples, args.minutes)
    for row in rows:
        print(row, flush=True)
    first_rss = [rss for t, rss in memory if 55 <= t <= 65] or [memory[0][1]]  # the end of the first minute
    last_rss = memory[-1][1]
    verdict = {"errors": sum(r["errors"] for r in rows),
               "p99_last_over_first": round(rows[-1]["p99_ms"] / rows[0]["p99_ms"], 2),
               "rss_first_minute_mib": round(first_rss[0] / 2**20, 1), "rss_end_mib": round(last_rss / 2**20, 1),
               "rss_growth": round(last_rss / first_rss[0] - 1, 4)}
    verdict["met"] = (verdict["errors"] == 0 and verdict["p99_last_over_first"] <= 1.5 and verdict["rss_growth"] < 0.10)
    print(verdict)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "command": " ".join(sys.argv), "model": {k: model[k] for k in ("name", "architecture", "id")},
              "capacity": capacity, "rate": rate, "minutes": rows, "memory": memory, "verdict": verdict}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
