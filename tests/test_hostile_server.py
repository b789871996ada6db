"""`ptflow serve` against hostile and careless HTTP clients, as real processes on 127.0.0.1.

One class per section: what "an API key is set" means; the request line and Host header (RFC 9112);
HEAD; the header and URL limits; text that is not valid Unicode, from a request or a model file;
health probes while slow clients hold every connection. The references: the HTTP RFCs, the limits
as SECURITY.md states them, GET's own answer (for HEAD), and the rule that nothing a client or a
model file sends gives a 5xx.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers.serving import read_until_closed  # noqa: E402

from ptflow.serve.app import Settings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def model_fn(trained):
    return trained["safetensors"]


@pytest.fixture(scope="module")
def url(serve_process, model_fn):
    """One server with default settings, shared by the tests that need nothing else."""
    with serve_process(model_fn) as base:
        yield base


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes; everything the server answers until it closes (or the timeout passes)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        return read_until_closed(sock, timeout)


def split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers without date, body) of one HTTP/1.1 answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    headers.pop("date", None)
    return int(lines[0].split()[1]), headers, body


def one_line_detail(answer: bytes) -> str:
    detail = json.loads(split(answer)[2])["detail"]
    assert "\n" not in detail and "Traceback" not in detail
    return detail


# --- one definition of "an API key is set" ------------------------------------------------------

@pytest.mark.parametrize("flags, env, words", [
    (["--api_key", ""], {}, "--api_key is set but empty"),
    (["--api_key", "   "], {}, "--api_key is set but empty"),
    ([], {"PTFLOW_API_KEY": ""}, "$PTFLOW_API_KEY is set but empty"),
    ([], {"PTFLOW_API_KEY": " \t"}, "$PTFLOW_API_KEY is set but empty"),
    (["--api_key", " key"], {}, "without leading or trailing blanks"),
    (["--api_key", "k\u00e9y"], {}, "printable ASCII"),
])
def test_an_empty_or_unsendable_api_key_is_a_usage_error(cli, model_fn, monkeypatch, flags, env, words):
    monkeypatch.delenv("PTFLOW_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = cli("serve", "--model_fn", model_fn, *flags)
    assert code == 2 and words in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and out == ""


@pytest.mark.parametrize("key", [None, "s3cret"])
def test_authentication_the_host_rule_and_v1_model_agree_on_whether_a_key_is_set(model_fn, monkeypatch, key):
    monkeypatch.delenv("PTFLOW_API_KEY", raising=False)
    settings = Settings(api_key=key)
    with TestClient(create_app(model_fn, settings), base_url="http://localhost") as local:
        for _ in range(500):
            if local.get("/readyz").status_code == 200:
                break
            time.sleep(0.01)
        auth_required = local.get("/v1/model").json()["auth_required"]
        unauthenticated = local.post("/v1/predict", json={"inputs": [[0.5] * 64]}).status_code
    foreign = TestClient(create_app(model_fn, settings), base_url="http://evil.example").get("/healthz").status_code
    keyed = key is not None
    assert settings.keyed is keyed and auth_required is keyed
    assert unauthenticated == (401 if keyed else 200)
    assert foreign == (200 if keyed else 403)  # the Host rule stands exactly when no key does


# --- the request line and Host (RFC 9112 section 3.2) ------------------------------------------

@pytest.mark.parametrize("key", [None, "s3cret"])
def test_two_hosts_a_missing_host_and_a_malformed_host_are_400(serve_process, model_fn, key):
    env = {"PTFLOW_API_KEY": key} if key else {}
    with serve_process(model_fn, env=env) as url:
        port = port_of(url)
        for request, words in [
            (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n", "more than one Host"),
            (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nhost: 127.0.0.1\r\n\r\n", "more than one Host"),
            (b"GET /healthz HTTP/1.1\r\n\r\n", "needs a Host header"),
            (b"GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n", "not a host name"),
            (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1/x\r\n\r\n", "not a host name"),
            (b"GET /healthz HTTP/1.1\r\nHost: user@127.0.0.1\r\n\r\n", "not a host name"),
        ]:
            answer = exchange(port, request)
            assert split(answer)[0] == 400, (request, answer)
            assert words in one_line_detail(answer)
            assert b"connection: close" in answer.lower()
        # a refused HEAD gets the refusal's status and headers, without the body (never a 500)
        status, headers, body = split(exchange(port, b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                     b"Host: evil.example\r\n\r\n"))
        assert (status, body) == (400, b"") and int(headers["content-length"]) > 0
        for host in (b"127.0.0.1", b"127.0.0.1:8000", b"[::1]:8000", b"localhost"):  # well formed: answered
            answer = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
            assert split(answer)[0] == 200, (host, answer)


# --- HEAD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/model", "/", "/no/such/path", "/v1/predict"])
def test_head_answers_as_get_with_the_same_status_and_headers_and_no_body(url, path):
    def ask(method: str) -> bytes:
        return exchange(port_of(url), f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                        .encode())

    get_status, get_headers, get_body = split(ask("GET"))
    status, headers, body = split(ask("HEAD"))
    assert (status, headers, body) == (get_status, get_headers, b"")
    assert int(headers["content-length"]) == len(get_body)
    if path in ("/healthz", "/readyz"):
        assert status == 200


# --- header and URL limits ----------------------------------------------------------------------

def test_url_beyond_the_limit_is_414_and_headers_431_however_they_arrive(serve_process, model_fn):
    with serve_process(model_fn, "--max_header_kb", "4") as url:
        port = port_of(url)
        long_url = b"GET /healthz?q=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        answer = exchange(port, long_url)
        assert split(answer)[0] == 414 and one_line_detail(answer) == "URL longer than 4 KiB"

        big_header = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 5000 + b"\r\n\r\n"
        many_headers = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: aaaaaaaa\r\n" * 400 + b"\r\n"
        with_body = (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\nX-Pad: " + b"a" * 5000 + b"\r\n\r\n{}")
        for request in (big_header, many_headers, with_body):  # each in one write: complete headers in one read
            answer = exchange(port, request)
            assert split(answer)[0] == 431, answer[:200]
            assert one_line_detail(answer) == "request line and headers larger than 4 KiB"

        with socket.create_connection(("127.0.0.1", port)) as sock:  # the same, a piece at a time
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
            for _ in range(6):
                sock.sendall(b"a" * 1000)
                time.sleep(0.02)
            answer = read_until_closed(sock, 10)
        assert split(answer)[0] == 431, answer[:200]

        within = b"GET /healthz?q=" + b"a" * 1500 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"b" * 2000 + \
            b"\r\nConnection: close\r\n\r\n"
        assert split(exchange(port, within))[0] == 200  # 3.6 KiB in all: within the limit
        text = httpx.get(url + "/metrics").text
    assert 'ptflow_connections_refused_total{reason="headers_too_large"} 5.0' in text


# --- text that is not valid Unicode -------------------------------------------------------------

@pytest.mark.parametrize("body", [
    rb'{"\ud800": 1}', rb'{"inputs": [[0.5]], "x\udcff": 1}', rb'{"images": ["\ud800"]}',
    rb'{"inputs": [["\udfff"]]}', rb'{"inputs": "\ud800\ud800"}', rb'{"inputs": [[NaN]], "\ud800": 1}',
    b'{"\xff\xfe": 1}', b'{"images": ["\xc3"]}', b'\xef\xbb\xbf{"inputs": [[0.5]]}',
    b'{"inputs": [[0.5, "\xed\xa0\x80"]]}',
])
def test_lone_surrogates_and_bytes_that_are_not_utf8_are_4xx(url, body):
    response = httpx.post(url + "/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    detail = response.json()["detail"]
    assert "\n" not in detail
    detail.encode("utf-8")  # valid text, whatever the request held


def test_a_model_with_non_utf8_class_and_file_names_is_served(cli, tmp_path, npz_data):
    # class names as os.listdir gives non-UTF-8 folder names (surrogate escapes), and a lone surrogate
    classes = ["caf\udce9", "\ud800", "ok"]
    with np.load(npz_data) as data:
        np.savez(tmp_path / "odd.npz", x=data["x"], y=data["y"], classes=np.array(classes))
    model = tmp_path / os.fsdecode(b"odd\xff.safetensors")
    code, _, err = cli("train", "--dataset", f"npz:{tmp_path / 'odd.npz'}", "--n_epochs", "1", "--runs_dir",
                       tmp_path / "runs", "--model_fn", model, "--verbose", "0")
    assert code == 0, err
    # its own process: the start-up line names the file as its bytes are, not valid UTF-8
    server = subprocess.Popen([sys.executable, "-m", "ptflow", "serve", "--model_fn", str(model), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="backslashreplace")
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", server.stdout.readline()).group(0)
        for _ in range(3000):
            if httpx.get(url + "/readyz").status_code == 200:
                break
            time.sleep(0.01)
        info = httpx.get(url + "/v1/model")
        predicted = httpx.post(url + "/v1/predict", json={"inputs": [[0.5] * 64]})
        metrics = httpx.get(url + "/metrics")
    finally:
        server.terminate()
        server.wait(15)
    shown = ["caf\\xe9", "\\ud800", "ok"]  # an undecodable byte as its \\x escape, a lone surrogate as \\u
    assert info.status_code == 200 and info.json()["classes"] == shown
    assert info.json()["name"] == "odd\\xff"
    assert predicted.status_code == 200
    assert list(predicted.json()["predictions"][0]["probabilities"]) == shown
    assert metrics.status_code == 200 and 'name="odd\\\\xff"' in metrics.text


# --- health probes are not starved by slow clients ----------------------------------------------

def test_health_probes_get_in_while_half_sent_requests_hold_every_connection(serve_process, model_fn):
    with serve_process(model_fn, "--max_connections", "4", "--request_timeout_s", "30") as url:
        port = port_of(url)
        slow = []
        for _ in range(8):  # twice the cap, each a request half sent, then silence (slowloris)
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
            slow.append(sock)
            time.sleep(0.02)
        started = time.monotonic()
        probes = [httpx.get(url + "/healthz", timeout=10) for _ in range(10)]
        assert [p.status_code for p in probes] == [200] * 10
        assert time.monotonic() - started < 10  # at once, not after --request_timeout_s
        answers = [read_until_closed(sock, 0.5) for sock in slow]
        for sock in slow:
            sock.close()
        shed = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(shed) >= 4 and all(b"retry-after: 1" in a for a in shed)  # the longest waiting made room
        assert b"slowest to arrive" in shed[0]
        assert answers[-1] == b"<still open>"  # the newest waiter kept its place
        text = httpx.get(url + "/metrics").text
    assert 'ptflow_connections_refused_total{reason="shed"}' in text


def test_when_every_connection_is_being_answered_a_newcomer_gets_503_at_once(serve_process, model_fn):
    # --max_wait_ms 1000: each prediction waits in the queue for a fuller batch, its connection busy
    with serve_process(model_fn, "--max_connections", "2", "--max_wait_ms", "1000") as url:
        port, body = port_of(url), json.dumps({"inputs": [[0.5] * 64]}).encode()
        busy = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for sock in busy:  # two whole requests, sent before the newcomer connects
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.2)
        answer = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout=5)
        answers = [read_until_closed(sock, 30) for sock in busy]
        for sock in busy:
            sock.close()
    assert split(answer)[0] == 503 and "all 2 connections are busy" in one_line_detail(answer)
    assert [split(a)[0] for a in answers] == [200, 200]  # nobody being answered was shed
