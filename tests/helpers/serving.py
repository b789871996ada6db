"""Servers for the tests: `ptflow serve` started as a process, and what the tests read from one.

httpx, PIL and prometheus_client are imported inside the functions: the suites that use them
skip without the serve extras, and importing this module must not fail first.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import threading
import time

import numpy as np

LOCAL = "http://localhost"  # without an API key, the server answers loopback Host names only


def start_command(command: list[str], env: dict | None = None,
                  ready_within: float = 60) -> tuple[subprocess.Popen, str]:
    """A serve command line in its own process; (process, URL) once /readyz answers 200."""
    import httpx

    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        seen = ""
        for line in server.stdout:  # the first line that names the URL; warnings may come before it
            seen += line
            match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if match:
                break
        else:
            raise AssertionError(f"server did not start: {seen}")
        url = match.group(0)
        deadline = time.monotonic() + ready_within
        while httpx.get(url + "/readyz", timeout=60).status_code != 200:  # workers accept once warm
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.05)
    except BaseException:
        stop(server)
        raise
    return server, url


def stop(server: subprocess.Popen) -> int:
    """SIGTERM, as a process manager stops it; its exit status (killed if it hangs past 30 s)."""
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()


def wait_ready(client) -> None:
    """Until an in-process app (TestClient) answers /readyz with 200: its model is loaded."""
    for _ in range(500):
        if client.get("/readyz").status_code == 200:
            return
        threading.Event().wait(0.01)
    raise AssertionError(client.get("/readyz").json())


def png(array: np.ndarray) -> bytes:
    """An image array as the bytes of a PNG file."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def metric(text: str, metric_name: str, **labels) -> float:
    """One sample's value from a /metrics page, read by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    found = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
             if sample.name == metric_name and all(sample.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (metric_name, labels, found)
    return found[0]


def read_until_closed(sock, timeout: float) -> bytes:
    """What the server sends on a raw socket until it closes the connection; b"<still open>" is
    appended when the timeout passes first."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        data += b"<still open>"
    except ConnectionResetError:  # closed with our bytes unread: what came before the reset still counts
        pass
    return data
