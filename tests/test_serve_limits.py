"""`ptflow serve` under hostile clients, in-process: settings, the Host rule, images, the queue, big bodies.

The references: the limits themselves (each refusal names the limit it met), `ptflow predict`'s
answers for the accepted formats, and where the work ran (large bodies and every image in the
decode processes, never on the event loop).
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import assert_one_line_error  # noqa: E402
from helpers.serving import LOCAL, png, wait_ready  # noqa: E402

from ptflow.serve.app import Settings, create_app  # noqa: E402
from ptflow.serve.batching import MicroBatcher, QueueFull  # noqa: E402
from ptflow.serve.security import host_allowed  # noqa: E402


@pytest.fixture(scope="module")
def model_fn(trained):
    return trained["safetensors"]


@pytest.fixture(scope="module")
def client(model_fn):
    settings = Settings(max_inputs=8, max_image_pixels=10_000, max_request_pixels=25_000, inline_body_kb=1)
    with TestClient(create_app(model_fn, settings), base_url=LOCAL) as c:
        wait_ready(c)
        yield c


def encoded(image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def digit(size: int = 64):
    from PIL import Image, ImageDraw

    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).rectangle([size // 4, size // 3, 3 * size // 4, size // 2], fill=230)
    return image


def upload(client, *files: tuple[str, bytes]):
    return client.post("/v1/predict/image", files=[("files", (name, data, "application/octet-stream"))
                                                    for name, data in files])


# --- settings are cross-checked at start -------------------------------------------------------

@pytest.mark.parametrize("flags, words", [
    (["--max_inputs", "2000"], "above --max_queue"),
    (["--max_batch_size", "2000", "--max_queue", "1500"], "above --max_queue"),
    (["--max_batch_size", "1000000"], "--max_batch_size must be within 1..4096"),
    (["--port", "70000"], "--port must be within 0..65535"),
    (["--port", "-1"], "--port must be within"),
    (["--max_body_mb", "nan"], "--max_body_mb must be a finite number"),
    (["--max_body_mb", "inf"], "--max_body_mb must be a finite number"),
    (["--max_wait_ms", "nan"], "--max_wait_ms must be a finite number"),
    (["--request_timeout_s", "inf"], "--request_timeout_s must be a finite number"),
    (["--request_timeout_s", "0"], "--request_timeout_s must be within"),
    (["--max_image_pixels", "20000000"], "above --max_request_pixels"),
    (["--workers", "0"], "--workers must be within"),
    (["--max_connections", "0"], "--max_connections must be within"),
    (["--host", "0.0.0.0", "--insecure"], "--allowed_hosts"),
])
def test_contradictory_or_absurd_settings_are_usage_errors(cli, model_fn, monkeypatch, flags, words):
    monkeypatch.delenv("PTFLOW_API_KEY", raising=False)
    code, _, err = cli("serve", "--model_fn", model_fn, *flags)
    assert code == 2 and words in err, err
    assert_one_line_error(err)


# --- the Host rule (DNS rebinding) -------------------------------------------------------------

@pytest.mark.parametrize("host, allowed, ok", [
    (b"127.0.0.1:8000", "", True), (b"localhost:8000", "", True), (b"LOCALHOST", "", True),
    (b"[::1]:8000", "", True), (b"app.localhost:8000", "", True), (b"127.8.9.1", "", True),
    (b"evil.example", "", False), (b"evil.example:8000", "", False), (b"127.0.0.1.evil.example", "", False),
    (b"localhost.evil.example", "", False), (None, "", False), (b"", "", False),
    (b"ptflow.internal:8000", "ptflow.internal, other", True), (b"evil.example", "ptflow.internal", False),
    (b"anything.at.all", "*", True),
])
def test_host_rule(host, allowed, ok):
    assert host_allowed(host, Settings(allowed_hosts=allowed).host_names) is ok


def test_without_a_key_only_loopback_hosts_are_answered(model_fn):
    app = create_app(model_fn, Settings(allowed_hosts="ptflow.internal"))  # no lifespan: the Guard alone
    for base, status in (("http://evil.example", 403), ("http://ptflow.internal", 200), ("http://127.0.0.1", 200)):
        response = TestClient(app, base_url=base).get("/healthz")
        assert response.status_code == status, base
    refused = TestClient(app, base_url="http://evil.example").post("/v1/predict", json={"inputs": [[0.5] * 64]})
    assert refused.status_code == 403 and "'evil.example' is not allowed" in refused.json()["detail"]
    keyed = create_app(model_fn, Settings(api_key="k"))  # with a key, every request is authenticated instead
    assert TestClient(keyed, base_url="http://evil.example").get("/healthz").status_code == 200


# --- images: formats, containers that lie, pixel budgets --------------------------------------

def test_every_accepted_format_predicts_and_lossless_ones_exactly_as_png(client):
    image = digit()
    reference = upload(client, ("d.png", encoded(image, "PNG"))).json()["predictions"][0]
    for format, options in (("GIF", {}), ("BMP", {}), ("WEBP", {"lossless": True}), ("JPEG", {"quality": 95})):
        response = upload(client, (f"d.{format.lower()}", encoded(image, format, **options)))
        assert response.status_code == 200, (format, response.text)
        got = response.json()["predictions"][0]
        if format != "JPEG":
            assert got["probabilities"] == reference["probabilities"], format
        assert got["label"] == reference["label"], format


def lying_ico(inner: bytes) -> bytes:
    """An icon whose directory says 16x16 while the PNG inside is whatever it is."""
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(inner), 22) + inner


def lying_gif(width: int, height: int, screen: int = 4) -> bytes:
    """A GIF whose logical screen says screen x screen while its frame is width x height."""
    from PIL import Image

    data = bytearray(encoded(Image.new("L", (width, height), 0), "GIF"))
    data[6:10] = struct.pack("<HH", screen, screen)
    return bytes(data)


def test_containers_and_formats_not_listed_are_refused_unread(client, monkeypatch):
    big = encoded(digit(300), "PNG")  # 90,000 pixels behind a directory that says 256
    for name, data in (("icon.ico", lying_ico(big)), ("scan.tiff", encoded(digit(), "TIFF")),
                       ("x.ppm", encoded(digit(), "PPM"))):
        response = upload(client, (name, data))
        assert response.status_code == 415, (name, response.text)
        assert f"{name}: not an image in an accepted format (PNG, JPEG, GIF, BMP, WebP)" == response.json()["detail"]


def test_sizes_learned_late_are_refused_by_pil_with_the_servers_limit(client):
    # PIL grows a GIF's size to its first frame while opening it; its bomb check, set to the server's
    # 10,000 pixels, refuses the 300x300 frame before a pixel is decoded.
    response = upload(client, ("late.gif", lying_gif(300, 300)))
    assert response.status_code == 413 and "late.gif: image too large" in response.json()["detail"]
    fine = upload(client, ("fine.gif", lying_gif(64, 64)))  # the same lie, within the limit: decoded at its real size
    assert fine.status_code == 200


def test_pixel_budgets_per_image_and_per_request(client):
    at_limit = encoded(digit(100), "PNG")  # 10,000 pixels: the per-image limit exactly
    assert upload(client, ("a.png", at_limit), ("b.png", at_limit)).status_code == 200
    three = upload(client, *((f"{i}.png", at_limit) for i in range(3)))
    assert three.status_code == 413
    assert three.json()["detail"] == ("the 3 images of this request have 30,000 pixels together; at most 25,000 "
                                      "are allowed per request")
    over = upload(client, ("big.png", encoded(digit(101), "PNG")))
    assert over.status_code == 413 and "101x101 pixels is more than the 10,000 allowed" in over.json()["detail"]


@pytest.mark.parametrize("body, content_type, status, words", [
    (b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\nabc", "multipart/form-data",
     400, "without a boundary"),
    (b"garbage without any boundary", "multipart/form-data; boundary=x", 400, "malformed multipart"),
    (b"--x\r\n" + b"Content-Disposition: form-data; name=\"n\"\r\n\r\nv\r\n--x\r\n" * 20 + b"--x--\r\n",
     "multipart/form-data; boundary=x", 422, "more than 8 files"),
])
def test_broken_multipart_bodies_are_4xx(client, body, content_type, status, words):
    response = client.post("/v1/predict/image", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status and words in response.json()["detail"], response.text


# --- where the work runs -----------------------------------------------------------------------

def test_large_bodies_and_all_images_are_handled_in_the_decode_processes(client):
    service = client.app.state.service
    calls, real = [], service.pool.run

    async def spy(fn, *args):
        calls.append(fn.__name__)
        return await real(fn, *args)

    service.pool.run = spy
    try:
        small = client.post("/v1/predict", json={"inputs": [[0.5] * 64]})  # ~330 bytes: parsed inline
        assert small.status_code == 200 and calls == []
        large = client.post("/v1/predict", json={"inputs": [[0.5] * 64] * 8})  # ~2.4 KB > inline_body_kb=1
        assert large.status_code == 200 and calls == ["parse_predict"]
        row = b"[" + b", ".join([b"0.5"] * 64) + b"]"
        bad = client.post("/v1/predict", content=b'{"inputs": [' + b", ".join([row] * 7) + b", [NaN" + b", 0.5" * 63
                          + b"]]}", headers={"Content-Type": "application/json"})  # refused by a decode process
        assert bad.status_code == 422 and "NaN" in bad.json()["detail"]
        calls.clear()
        image = base64.b64encode(png(np.zeros((8, 8), np.uint8))).decode()
        assert client.post("/v1/predict", json={"images": [image]}).status_code == 200
        assert calls == ["decode_images"]  # a small body parsed inline, its image decoded out of process
    finally:
        service.pool.run = real
    assert large.json()["predictions"] == [small.json()["predictions"][0] | {"input": f"inputs[{i}]"}
                                           for i in range(8)]


def test_images_being_decoded_count_against_the_queue(model_fn):
    """With 3 images held in decoding and --max_queue 4, a 2-input request is refused, a 1-input one is not."""
    gate = threading.Event()

    async def scenario():
        app = create_app(model_fn, Settings(max_queue=4, max_inputs=4, max_batch_size=4))
        service = app.state.service
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL) as c:
                while (await c.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.01)
                real = service.pool.run

                async def held(fn, *args):
                    await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)
                    return await real(fn, *args)

                service.pool.run = held
                image = base64.b64encode(png(np.zeros((8, 8), np.uint8))).decode()
                images = asyncio.create_task(c.post("/v1/predict", json={"images": [image] * 3}))
                while service.batcher.depth < 3:
                    await asyncio.sleep(0.01)
                two = await c.post("/v1/predict", json={"inputs": [[0.5] * 64] * 2})
                metrics = (await c.get("/metrics")).text
                one = asyncio.create_task(c.post("/v1/predict", json={"inputs": [[0.5] * 64]}))
                await asyncio.sleep(0.2)
                gate.set()
                return two, await images, await one, metrics, service.batcher.depth

    two, images, one, metrics, depth_after = asyncio.run(scenario())
    assert two.status_code == 503 and "3 inputs are already waiting" in two.json()["detail"]
    assert images.status_code == 200 and one.status_code == 200 and depth_after == 0
    assert "ptflow_queue_depth 3.0" in metrics


# --- the micro-batcher drains on shutdown ------------------------------------------------------

def test_stop_answers_what_is_queued_and_refuses_what_comes_after():
    gate = threading.Event()

    def predict(x):
        gate.wait(10)
        return x * 2

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size=1, max_queue=10)
        batcher.start()
        calls = [asyncio.create_task(batcher.predict(np.full((1, 2), i, np.float32))) for i in range(4)]
        await asyncio.sleep(0.1)  # the first is in its forward pass, three are queued
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.1)
        with pytest.raises(QueueFull, match="shutting down"):
            await batcher.predict(np.zeros((1, 2), np.float32))
        gate.set()
        await stopping
        return [await c for c in calls]

    answers = asyncio.run(scenario())
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer, np.full((1, 2), 2 * i, np.float32))


# --- the decoder against damaged files ---------------------------------------------------------

@pytest.fixture
def decoder_process_settings():
    """The decoder as a decode process runs it; PIL's bomb limit, which it sets, restored afterwards."""
    from PIL import Image

    from ptflow.serve import images

    limit = Image.MAX_IMAGE_PIXELS
    yield images
    Image.MAX_IMAGE_PIXELS = limit


def test_damaged_images_are_4xx_never_a_crash(decoder_process_settings):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from ptflow.serve.payloads import RequestError

    images = decoder_process_settings
    seeds = [encoded(digit(48), "PNG"), encoded(digit(48), "GIF"), encoded(digit(48), "BMP"),
             encoded(digit(48), "WEBP"), encoded(digit(48), "JPEG"), encoded(digit(48), "WEBP", lossless=True)]

    @given(seed=st.sampled_from(seeds), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                       max_size=8), cut=st.integers(0, 10_000))
    @settings(max_examples=400, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def damaged(seed, flips, cut):
        data = bytearray(seed)
        for at, value in flips:
            data[at % len(data)] = value
        data = bytes(data[:max(1, len(data) - cut % len(data))])
        try:
            x = images.decode_images([("f", data)], (1, 8, 8), "digit", 20_000, 20_000)
        except RequestError as exc:
            assert 400 <= exc.status < 500 and exc.detail.startswith("f"), exc.detail
        else:
            assert x.shape == (1, 1, 8, 8) and x.dtype == np.uint8

    damaged()


def test_decoders_exit_when_their_worker_is_killed(tmp_path):
    """SIGKILL gives a worker no chance to stop its decode processes: they notice, and exit by themselves."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "worker.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from ptflow.serve.pool import DecodePool\n"
        "async def main():\n"
        "    pool = DecodePool(2)\n"
        "    await pool.start()\n"
        "    print(' '.join(str(p) for p in pool._executor._processes), flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n")
    worker = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    decoders = [int(pid) for pid in worker.stdout.readline().split()]
    assert len(decoders) == 2 and all(os.path.exists(f"/proc/{pid}") for pid in decoders)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in decoders):
        assert time.monotonic() < deadline, "a decoder outlived its worker"
        time.sleep(0.1)


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
