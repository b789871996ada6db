"""`ptflow serve` under hostile clients: what a pixel bomb, 8 MiB bodies and slow clients cost the server.

Three measurements over loopback, each against a server started for it (and, with --before_src,
against an older ptflow's server too, in the same run, so the two compare as ratios):
1. bomb: one multipart request of eight 4000x4000 PNGs (a small body: the pixels are zeros and
   compress well): its status, wall time, and the server's CPU seconds (its processes summed,
   from /proc).
2. big bodies: clients post ~8 MiB bodies back to back (JSON of 2,600 inputs, refused with 422
   once parsed; 256 valid inputs padded with whitespace, answered 200; base64 garbage, refused)
   while a prober asks /healthz every 20 ms on its own connection: /healthz latency percentiles.
3. slow clients: 20 connections that start a request and then send one byte every 10 s: how
   many the server still holds open after --slow_wait seconds.

    python bench/hostile.py --model_fn mnist.safetensors --before_src /tmp/ptflow-before/src
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

import numpy as np
from load_test import start_server

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants, alive now."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
    family, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    return sum(times.get(p, 0.0) for p in family)


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "ptflowbench"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, path: str, body: bytes, content_type: str, timeout: float = 300) -> int:
    request = urllib.request.Request(url + path, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def bomb(url: str, pid: int) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(8):
        pixels = np.zeros((4000, 4000), np.uint8)
        pixels[rng.integers(0, 4000, 400), rng.integers(0, 4000, 400)] = 255  # a little ink: not all zeros
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        files.append((f"big{i}.png", buffer.getvalue()))
    body, content_type = multipart(files)
    before, start = cpu_seconds(pid), time.perf_counter()
    status = post(url, "/v1/predict/image", body, content_type)
    wall = time.perf_counter() - start
    time.sleep(0.5)  # let the server finish whatever it still does for it
    return {"status": status, "body_kb": round(len(body) / 1024), "wall_s": round(wall, 3),
            "server_cpu_s": round(cpu_seconds(pid) - before, 2)}


def big_bodies() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(1)
    target = 8 * 1024 * 1024 - 4096
    many = ('{"inputs":' + json.dumps(rng.random((2600, 784)).round(4).tolist()) + "}").encode()[:target - 2]
    many = many[:many.rfind(b"]")] + b"]]}"  # ~8 MiB, 2,600-ish inputs: parsed, then refused (422)
    valid = ('{"inputs":' + json.dumps((rng.random((256, 784)) * (rng.random((256, 784)) < 0.19)).round(4)
                                       .tolist()) + "}").encode()
    valid = valid[:-1] + b" " * (target - len(valid)) + b"}"  # 256 real inputs, padded to ~8 MiB: answered
    garbage = b'{"images": ["' + b"A" * (target - 20) + b'"]}'  # 8 MiB of base64 that is no image
    return [("json_many_inputs", many), ("json_valid_padded", valid), ("base64_garbage", garbage)]


async def probe_health(host: str, port: int, stop: float, out: list) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    while time.perf_counter() < stop:
        start = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(re.search(rb"content-length: *(\d+)", head, re.I).group(1)))
        out.append(time.perf_counter() - start)
        await asyncio.sleep(max(0.0, 0.02 - (time.perf_counter() - start)))
    writer.close()


def health_under_big_bodies(url: str, seconds: float, clients: int) -> dict:
    host, port = url.split("//")[1].split(":")
    bodies = big_bodies()
    statuses: dict[str, list[int]] = {name: [] for name, _ in bodies}
    latencies: list[float] = []

    async def sender(k: int, stop: float):
        loop, i = asyncio.get_running_loop(), k
        while time.perf_counter() < stop:
            name, body = bodies[i % len(bodies)]
            statuses[name].append(await loop.run_in_executor(None, post, url, "/v1/predict", body,
                                                             "application/json"))
            i += 1

    async def main(senders: int):
        stop = time.perf_counter() + seconds
        await asyncio.gather(probe_health(host, int(port), stop, latencies), *(sender(k, stop) for k in range(senders)))

    asyncio.run(main(0))  # the baseline: /healthz alone, on the same (possibly busy) machine
    quiet = np.array(latencies) * 1000
    latencies.clear()
    asyncio.run(main(clients))
    ms = np.array(latencies) * 1000
    return {"healthz_alone_p99_ms": round(float(np.percentile(quiet, 99)), 2),
            "healthz_requests": len(ms), "healthz_p50_ms": round(float(np.percentile(ms, 50)), 2),
            "healthz_p99_ms": round(float(np.percentile(ms, 99)), 2), "healthz_max_ms": round(float(ms.max()), 2),
            "big_bodies": {name: {str(s): codes.count(s) for s in sorted(set(codes))}
                           for name, codes in statuses.items()}}


def slow_clients(url: str, count: int, period: float, wait: float) -> dict:
    host, port = url.split("//")[1].split(":")
    socks = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 100000\r\n\r\n{{".encode())
        sock.setblocking(False)
        socks.append(sock)
    start, answers = time.monotonic(), [b""] * count
    closed = [False] * count
    next_byte = start + period
    while time.monotonic() - start < wait:
        time.sleep(0.2)
        for i, sock in enumerate(socks):
            if closed[i]:
                continue
            try:
                data = sock.recv(4096)
                if data == b"":
                    closed[i] = True
                answers[i] += data
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = True
        if time.monotonic() >= next_byte:
            for i, sock in enumerate(socks):
                if not closed[i]:
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        closed[i] = True
            next_byte += period
    for sock in socks:
        sock.close()
    firsts = sorted({a.split(b"\r\n", 1)[0].decode() for a in answers if a})
    return {"connections": count, "byte_every_s": period, "waited_s": wait, "still_open": closed.count(False),
            "answers": firsts}


def measure(label: str, model_fn: str, src: str | None, args) -> dict:
    row = {"server": label}
    server, url = start_server(model_fn, [], src)
    try:
        parts = {"bomb": lambda: bomb(url, server.pid),
                 "big_bodies": lambda: health_under_big_bodies(url, args.seconds, args.clients),
                 "slow_clients": lambda: slow_clients(url, 20, 10.0, args.slow_wait)}
        for name, part in parts.items():
            if name not in args.skip.split(","):
                row[name] = part()
                print(label, name, row[name], flush=True)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_fn", required=True)
    parser.add_argument("--before_src", default=None, help="an older ptflow's src/ folder, measured in the same run")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the big bodies are sent")
    parser.add_argument("--clients", type=int, default=2, help="clients sending big bodies at once")
    parser.add_argument("--slow_wait", type=float, default=40.0, help="seconds to watch the slow clients")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: bomb, big_bodies, slow_clients")
    parser.add_argument("--out", default="bench/hostile_results.json")
    args = parser.parse_args()
    rows = [measure("this", args.model_fn, None, args)]
    if args.before_src:
        rows.append(measure("before", args.model_fn, args.before_src, args))
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "command": " ".join(sys.argv), "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
