"""`ptflow serve` as real processes: slow clients, several workers, graceful shutdown.

The references: what the server's limits promise (a 408 at the deadline, a 431 past the headers' limit),
the number of requests sent (which /metrics must report whole, whichever worker answers), and
every request in flight at SIGTERM (each must be answered).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from helpers.serving import metric, read_until_closed, start_command, stop  # noqa: E402


@pytest.fixture(scope="module")
def model_fn(trained):
    return trained["safetensors"]


def start(model_fn, *flags: str) -> tuple[subprocess.Popen, str]:
    """`ptflow serve --port 0 FLAGS` in its own process; (process, URL) once /readyz answers 200."""
    return start_command([sys.executable, "-m", "ptflow", "serve", "--model_fn", str(model_fn), "--port", "0", *flags])


STOPPED = (0, -signal.SIGTERM)  # uvicorn re-raises the signal it stopped for, once stopped


def test_slow_clients_get_408_at_the_deadline_and_huge_headers_431(model_fn):
    # At the cap, newcomers take the slowest clients' places: tests/test_hostile_server.py.
    server, url = start(model_fn, "--request_timeout_s", "1.5", "--max_connections", "6")
    port = int(url.rsplit(":", 1)[1])
    try:
        trickling = []
        for i in range(5):  # five clients start a request and send the rest a byte at a time
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
            trickling.append(sock)
        silent = socket.create_connection(("127.0.0.1", port))  # the sixth connects and says nothing
        started = time.monotonic()
        for _ in range(3):
            for sock in trickling:
                sock.sendall(b" ")
            time.sleep(0.3)
        for sock in [*trickling, silent]:
            answer = read_until_closed(sock, timeout=5)
            assert answer.startswith(b"HTTP/1.1 408") and b"within 1.5 s" in answer, answer
        assert time.monotonic() - started < 4  # closed at the deadline, not at some later sweep
        for sock in [*trickling, silent]:
            sock.close()
        with socket.create_connection(("127.0.0.1", port)) as sock:  # headers past --max_header_kb (64)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 66_000)
            answer = read_until_closed(sock, timeout=5)
        assert answer.startswith(b"HTTP/1.1 431") and b"larger than 64 KiB" in answer, answer[:200]
        time.sleep(0.2)
        text = httpx.get(url + "/metrics").text  # the slots are free again
        assert metric(text, "ptflow_connections_refused_total", reason="timeout") == 6
        assert metric(text, "ptflow_requests_total", path="/v1/predict", status="408") == 5
        assert metric(text, "ptflow_connections_refused_total", reason="headers_too_large") == 1
    finally:
        assert stop(server) in STOPPED


def test_each_request_on_a_kept_alive_connection_gets_its_own_deadline(model_fn):
    """The deadline timer is one per connection, re-aimed when it fires early: a second request
    started late on a kept-alive connection must get the whole timeout from its first byte, and
    one that trickles past it a 408."""
    server, url = start(model_fn, "--request_timeout_s", "1.5")
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            sock.settimeout(5)
            first = b""
            while not first.endswith(b"}"):  # the whole answer: headers and the JSON body may come apart
                first += sock.recv(4096)
            assert first.startswith(b"HTTP/1.1 200"), first
            time.sleep(1.0)  # the connection's first deadline falls 0.5 s into the next request
            started = time.monotonic()
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
            for _ in range(4):  # alive past the first request's deadline, within its own
                time.sleep(0.25)
                sock.sendall(b" ")
            answer = read_until_closed(sock, timeout=5)
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 1.4 < waited < 3.0, waited  # at the second request's deadline, not the first's
    finally:
        assert stop(server) in STOPPED


def test_workers_share_one_port_and_metrics_describe_the_whole_server(model_fn):
    server, url = start(model_fn, "--workers", "2")
    try:
        body = {"inputs": [[0.5] * 64]}
        for _ in range(40):  # a new connection each time: the kernel hands them to either worker
            assert httpx.post(url + "/v1/predict", json=body).status_code == 200
        for _ in range(8):  # whichever worker answers, the totals are the server's
            text = httpx.get(url + "/metrics").text
            assert metric(text, "ptflow_requests_total", path="/v1/predict", status="200") == 40
            assert metric(text, "ptflow_batch_size_sum") == 40
            assert metric(text, "ptflow_workers") == 2
            assert metric(text, "ptflow_queue_depth") == 0
    finally:
        assert stop(server) in STOPPED


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_answers_every_request_in_flight(model_fn, workers):
    # --max_wait_ms 1000: each request waits in its worker's queue for a fuller batch when SIGTERM comes
    server, url = start(model_fn, "--workers", workers, "--max_wait_ms", "1000")

    async def scenario():
        limits = httpx.Limits(max_keepalive_connections=0)  # one connection per request: both workers get some
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
            calls = [asyncio.create_task(c.post("/v1/predict", json={"inputs": [[i / 16] * 64]})) for i in range(16)]
            await asyncio.sleep(0.4)
            server.send_signal(signal.SIGTERM)
            return await asyncio.gather(*calls)

    try:
        answers = asyncio.run(scenario())
        assert server.wait(timeout=30) in STOPPED
    finally:
        if server.poll() is None:
            server.kill()
    assert [a.status_code for a in answers] == [200] * 16
    assert [a.json()["predictions"][0]["input"] for a in answers] == ["inputs[0]"] * 16
