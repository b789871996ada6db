"""`ptflow serve`: every endpoint and every error, in-process (TestClient) and in a real uvicorn process.

The references: `ptflow predict` on the same inputs (the API must give the same probabilities),
the model file itself (sha256, classes) and each caller's own input under concurrency.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import assert_one_line_error, make_images  # noqa: E402
from helpers.serving import LOCAL, metric, png, wait_ready  # noqa: E402

from ptflow.models.files import read_model_file  # noqa: E402
from ptflow.serve.app import Settings, create_app  # noqa: E402
from ptflow.serve.batching import MicroBatcher, QueueFull  # noqa: E402
from ptflow.serve.security import page_and_csp  # noqa: E402


@pytest.fixture(scope="module")
def model_fn(trained):
    return trained["safetensors"]


@pytest.fixture(scope="module")
def client(model_fn):
    settings = Settings(max_inputs=8, max_body_mb=64_000 / 2**20, max_image_pixels=1_000_000)
    with TestClient(create_app(model_fn, settings), base_url=LOCAL) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def images():
    x, _ = make_images(6, seed=7)  # (6, 8, 8) uint8, like the training data
    return x


def cli_predictions(cli, tmp_path, model_fn, *inputs) -> list[dict]:
    code, out, err = cli("predict", "--model_fn", model_fn, "--format", "json", *inputs)
    assert code == 0, err
    return json.loads(out)


def assert_same_predictions(api: list[dict], reference: list[dict]) -> None:
    assert len(api) == len(reference)
    for a, r in zip(api, reference):
        assert (a["label"], a["class"]) == (r["label"], r["class"])
        assert a["probabilities"].keys() == r["probabilities"].keys()
        np.testing.assert_allclose(list(a["probabilities"].values()), list(r["probabilities"].values()), atol=2e-6)


# --- endpoints ---------------------------------------------------------------------------------

def test_health_ready_and_model_describe_the_file(client, model_fn, trained):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    info = client.get("/v1/model").json()
    assert info["sha256"] == info["id"] == hashlib.sha256(model_fn.read_bytes()).hexdigest()
    assert info["classes"] == ["top", "middle", "bottom"] and info["input_shape"] == [1, 8, 8]
    assert info["name"] == "toy" and info["architecture"] == "mlp" and info["input_range"] == [0.0, 1.0]
    assert info["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert info["metrics"] == read_model_file(model_fn)[1]["metrics"]
    assert info["auth_required"] is False and info["max_inputs"] == 8


def test_json_predictions_equal_cli_predict(client, cli, tmp_path, model_fn, images):
    x = images.astype(np.float32) / 255  # JSON inputs are on the model's scale
    np.savez(tmp_path / "x.npz", x=x)
    reference = cli_predictions(cli, tmp_path, model_fn, tmp_path / "x.npz")
    for inputs in (x.tolist(), x.reshape(len(x), -1).tolist(), x[:, None].tolist()):  # 2-D, flat, (C, H, W)
        body = client.post("/v1/predict", json={"inputs": inputs}).json()
        assert body["model_id"] == hashlib.sha256(model_fn.read_bytes()).hexdigest()
        assert [p["input"] for p in body["predictions"]] == [f"inputs[{i}]" for i in range(len(x))]
        assert_same_predictions(body["predictions"], reference)


def test_image_predictions_equal_cli_predict(client, cli, tmp_path, model_fn, images):
    files = []
    for i, image in enumerate(images[:3]):
        files.append(tmp_path / f"digit{i}.png")
        files[-1].write_bytes(png(255 - image))  # dark on light, as a photo would be
    reference = cli_predictions(cli, tmp_path, model_fn, *files)
    uploaded = client.post("/v1/predict/image", files=[("files", (f.name, f.read_bytes(), "image/png")) for f in files])
    assert [p["input"] for p in uploaded.json()["predictions"]] == [f.name for f in files]
    assert_same_predictions(uploaded.json()["predictions"], reference)
    encoded = [base64.b64encode(f.read_bytes()).decode() for f in files]
    encoded[0] = "data:image/png;base64," + encoded[0]  # what a browser's toDataURL gives
    as_json = client.post("/v1/predict", json={"images": encoded})
    assert_same_predictions(as_json.json()["predictions"], reference)


def test_metrics_count_requests_batches_and_queue(client):
    client.post("/v1/predict", json={"inputs": [[0.5] * 64, [0.1] * 64]})
    client.post("/v1/predict", json={"inputs": "nope"})
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert metric(text, "ptflow_requests_total", path="/v1/predict", status="200") >= 1
    assert metric(text, "ptflow_requests_total", path="/v1/predict", status="422") >= 1
    assert metric(text, "ptflow_request_duration_seconds_bucket", path="/v1/predict", le="+Inf") >= 2
    assert metric(text, "ptflow_batch_size_sum") >= 2  # the two-row request went through one forward pass
    assert metric(text, "ptflow_queue_depth") == 0
    assert metric(text, "ptflow_workers") == 1
    sha256 = hashlib.sha256(client.app.state.service.source.read_bytes()).hexdigest()
    assert metric(text, "ptflow_model_info", sha256=sha256, architecture="mlp", name="toy") == 1


def test_openapi_schema_and_docs(client):
    schema = client.get("/openapi.json").json()
    for path in ("/v1/predict", "/v1/predict/image", "/v1/model", "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"], path
    predict = schema["paths"]["/v1/predict"]["post"]
    assert {"413", "415", "422", "503"} <= set(predict["responses"])
    assert "multipart/form-data" in schema["paths"]["/v1/predict/image"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("body", [
    {"inputs": [[0.5] * 64]}, {"inputs": [[[0.5] * 8] * 8] * 8}, {"inputs": [[[[0.0] * 8] * 8]]},
    {"inputs": [[1] * 64, [0] * 64]},
    {"inputs": []}, {"inputs": [], "images": None}, {"inputs": [[0.5] * 64], "images": []}, {},
    {"inputs": [[0.5] * 64] * 9}, {"inputs": [[0.5] * 63]}, {"inputs": [[1.5] * 64]}, {"inputs": [[-0.1] * 64]},
    {"inputs": [[0.5] * 64, [[0.5] * 8] * 8]}, {"inputs": [[True] + [0.5] * 63]}, {"inputs": [["0.5"] * 64]},
    {"inputs": [[0.5] * 64], "extra": 1}, {"images": []}, {"images": [1]}, {"images": None},
])
def test_the_schema_accepts_exactly_the_json_inputs_the_server_accepts(client, body):
    """The reference is the schema: a body fits it if and only if the server answers 200."""
    jsonschema = pytest.importorskip("jsonschema")  # schemathesis's own dependency

    schema = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    body_schema = schema["requestBody"]["content"]["application/json"]["schema"]
    fits = jsonschema.Draft202012Validator(body_schema).is_valid(body)
    response = client.post("/v1/predict", json=body)
    assert fits == (response.status_code == 200), response.text
    assert response.status_code < 500


def test_page_is_self_contained_with_a_csp_for_its_own_code(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html, csp = page_and_csp()
    assert response.text == html and response.headers["content-security-policy"] == csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from elsewhere: works offline
    assert '<canvas id="pad" width="280" height="280"' in html


# --- errors ------------------------------------------------------------------------------------

def post_raw(client, body: bytes, content_type="application/json"):
    return client.post("/v1/predict", content=body, headers={"Content-Type": content_type})


@pytest.mark.parametrize("body, status, words", [
    (b'{"inputs": [[0.5, 0.5]]}', 422, "shape"),
    (b'{"inputs": [' + b"[0.5]," * 8 + b"[0.5]]}", 422, "at most 8"),
    (b'{"inputs": [[NaN' + b", 0.5" * 63 + b"]]}", 422, "NaN"),
    (b'{"inputs": [[Infinity' + b", 0.5" * 63 + b"]]}", 422, "infinite"),
    (b'{"inputs": [[1.5' + b", 0.5" * 63 + b"]]}", 422, "[0, 1]"),
    (b'{"inputs": [[-0.1' + b", 0.5" * 63 + b"]]}", 422, "[0, 1]"),
    (b'{"inputs": [["a"' + b", 0.5" * 63 + b"]]}", 422, "number"),
    (b'{"inputs": [[0.5], [0.5, 0.5]]}', 422, "same shape"),
    (b'{"inputs": [0.5, 0.5]}', 422, "list of inputs"),
    (b'{"inputs": []}', 422, "non-empty"),
    (b'{"inputs": [[0.5]], "images": []}', 422, "exactly one"),
    (b'{"pixels": [[0.5]]}', 422, "unknown field"),
    (b"[1, 2]", 422, "JSON object"),
    (b'{"inputs": [[0.5,', 400, "not valid JSON"),
    (b'{"images": ["%%%"]}', 400, "base64"),
    (b'{"images": ["' + base64.b64encode(b"not an image at all") + b'"]}', 415, "accepted format"),
    (b'{"images": [42]}', 422, "base64 string"),
])
def test_bad_json_bodies_are_4xx_naming_the_problem(client, body, status, words):
    response = post_raw(client, body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_wrong_media_types_are_415(client):
    assert post_raw(client, b'{"inputs": [[0.5]]}', "text/plain").status_code == 415
    assert client.post("/v1/predict", data={"inputs": "1"}).status_code == 415
    response = client.post("/v1/predict/image", json={"images": []})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]


def test_too_large_bodies_are_413_with_or_without_content_length(client):
    big = b'{"inputs": [[' + b"0.5, " * 20_000 + b"0.5]]}"
    response = post_raw(client, big)
    assert response.status_code == 413 and "64,000 bytes" in response.json()["detail"]
    chunked = client.post("/v1/predict", content=iter([big[:40_000], big[40_000:]]),
                          headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's calling card)."""
    data = bytearray(png(np.zeros((4, 4), np.uint8)))
    ihdr = 8 + 8  # signature, then length and type of the IHDR chunk
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def test_bomb_and_oversized_images_are_413_and_broken_ones_400(client):
    bomb = client.post("/v1/predict/image", files={"files": ("bomb.png", bomb_png(30_000, 30_000), "image/png")})
    assert bomb.status_code == 413 and "bomb.png: image too large" in bomb.json()["detail"]
    encoded = base64.b64encode(bomb_png(5_000, 5_000)).decode()  # under PIL's own limit, over the server's
    oversized = client.post("/v1/predict", json={"images": [encoded]})
    assert oversized.status_code == 413 and "more than 1,000,000 pixels" in oversized.json()["detail"]
    truncated = png(np.full((32, 32), 200, np.uint8))[:60]
    broken = client.post("/v1/predict/image", files={"files": ("cut.png", truncated, "image/png")})
    assert broken.status_code == 400 and "cut.png" in broken.json()["detail"]


def test_upload_count_and_missing_files_are_422(client, images):
    files = [("files", (f"{i}.png", png(images[0]), "image/png")) for i in range(9)]
    response = client.post("/v1/predict/image", files=files)
    assert response.status_code == 422 and "8" in response.json()["detail"]
    form_urlencoded = client.post("/v1/predict/image", data={"note": "no file"})
    assert form_urlencoded.status_code == 415
    text_field = client.post("/v1/predict/image", files={"note": (None, "just text")})
    assert text_field.status_code == 422 and "unexpected form field 'note'" in text_field.json()["detail"]
    other_name = client.post("/v1/predict/image", files=[("file", ("a.png", png(images[0]), "image/png"))])
    assert other_name.status_code == 422 and "'files' field" in other_name.json()["detail"]  # as the schema says
    no_parts = client.post("/v1/predict/image", content=b"--x--\r\n",
                           headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert no_parts.status_code == 422 and "no image files" in no_parts.json()["detail"]


def test_unknown_paths_and_methods_are_json_4xx(client):
    assert client.get("/v2/predict").json() == {"detail": "Not Found"}
    assert client.get("/v1/predict").status_code == 405


def test_tabular_models_take_any_finite_values_but_no_images(tabular):
    with TestClient(create_app(tabular), base_url=LOCAL) as c:
        wait_ready(c)
        assert c.get("/v1/model").json()["input_range"] is None
        ok = c.post("/v1/predict", json={"inputs": [[20.0, -3.5, 40.0, 1e4, 0.0, 7.0]]})
        assert ok.status_code == 200 and len(ok.json()["predictions"][0]["probabilities"]) == 2
        nan = post_raw(c, b'{"inputs": [[NaN, 1, 2, 3, 4, 5]]}')
        assert nan.status_code == 422 and "NaN" in nan.json()["detail"]
        image = c.post("/v1/predict/image", files={"files": ("a.png", png(np.zeros((8, 8), np.uint8)), "image/png")})
        assert image.status_code == 422 and "not images" in image.json()["detail"]


def test_not_ready_is_503_with_retry_after(model_fn, tmp_path):
    app = create_app(model_fn)
    plain = TestClient(app, base_url=LOCAL)  # no lifespan: the model has not been loaded yet
    assert plain.get("/healthz").status_code == 200
    for response in (plain.get("/readyz"), plain.post("/v1/predict", json={"inputs": [[0.5] * 64]})):
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(model_fn.read_bytes()[:200])
    with TestClient(create_app(corrupt), base_url=LOCAL) as c:
        for _ in range(200):
            detail = c.get("/readyz").json()["detail"]
            if "failed" in detail:
                break
            threading.Event().wait(0.01)
        assert "model failed to load" in detail and "corrupt" in detail
        assert c.get("/healthz").status_code == 200


def test_api_key_guards_predictions_only(model_fn):
    with TestClient(create_app(model_fn, Settings(api_key="s3cret")), base_url=LOCAL) as c:
        wait_ready(c)
        body = {"inputs": [[0.5] * 64]}
        missing = c.post("/v1/predict", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/predict", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/predict/image", files={"files": ("a.png", b"x", "image/png")}).status_code == 401
        assert c.post("/v1/predict", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v1/model").json()["auth_required"] is True
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200
        assert "HTTPBearer" in json.dumps(c.get("/openapi.json").json()["components"])


def test_a_failing_forward_pass_is_a_json_500_without_traceback(model_fn, monkeypatch):
    with TestClient(create_app(model_fn), raise_server_exceptions=False, base_url=LOCAL) as c:
        wait_ready(c)
        monkeypatch.setattr("ptflow.serve.app.predict_proba", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        response = c.post("/v1/predict", json={"inputs": [[0.5] * 64]})
        assert response.status_code == 500
        assert response.json() == {"detail": "internal server error (RuntimeError)"}


def test_full_queue_is_503_with_retry_after(model_fn, monkeypatch):
    import ptflow.serve.app

    gate, real = threading.Event(), ptflow.serve.app.predict_proba

    def held(loaded, x):
        gate.wait(10)
        return real(loaded, x)

    async def scenario():
        app = create_app(model_fn, Settings(max_queue=1, max_inputs=1, max_batch_size=1))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=LOCAL) as c:
                while (await c.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.01)
                monkeypatch.setattr("ptflow.serve.app.predict_proba", held)
                body = {"inputs": [[0.5] * 64]}
                first = asyncio.create_task(c.post("/v1/predict", json=body))  # held in the forward pass
                await asyncio.sleep(0.2)
                second = asyncio.create_task(c.post("/v1/predict", json=body))  # waits in the queue
                await asyncio.sleep(0.2)
                third = await c.post("/v1/predict", json=body)  # finds the queue full
                gate.set()
                return await first, await second, third

    first, second, third = asyncio.run(scenario())
    assert first.status_code == second.status_code == 200
    assert third.status_code == 503 and third.headers["retry-after"] == "1" and "busy" in third.json()["detail"]


def test_concurrent_images_and_json_inputs_each_get_their_own_answer(model_fn, images):
    """Pixels (uint8) and scaled floats queue together but must not be stacked into one pass."""
    bodies = []
    for image in images:
        bodies.append({"images": [base64.b64encode(png(image)).decode()]})
        bodies.append({"inputs": [(image.astype(np.float32) / 255).tolist()]})

    async def scenario():
        app = create_app(model_fn, Settings(max_wait_ms=50))
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL) as c:
                while (await c.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.01)
                alone = [(await c.post("/v1/predict", json=b)).json() for b in bodies]
                together = await asyncio.gather(*(c.post("/v1/predict", json=b) for b in bodies))
                return alone, [r.json() for r in together], (await c.get("/metrics")).text

    alone, together, metrics = asyncio.run(scenario())
    for a, t in zip(alone, together):
        assert_same_predictions(t["predictions"], a["predictions"])
    passes = metric(metrics, "ptflow_batch_size_count")
    assert passes < 2 * len(bodies)  # the concurrent round shared passes


# --- the micro-batcher -------------------------------------------------------------------------

def run_batcher(max_batch_size: int, max_wait_ms: float, sizes: list[int], dtypes=(np.float32,)):
    batches = []

    def predict(x):  # each row's answer depends on its own input only, and (like Preprocess) on the dtype
        batches.append(len(x))
        return answer(x)

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size, max_wait_ms, max_queue=1000)
        batcher.start()
        inputs = [(np.arange(n * 3).reshape(n, 3) + 10 * i).astype(dtypes[i % len(dtypes)])
                  for i, n in enumerate(sizes)]
        outputs = await asyncio.gather(*(batcher.predict(x) for x in inputs))
        await batcher.stop()
        return inputs, outputs

    inputs, outputs = asyncio.run(scenario())
    for x, out in zip(inputs, outputs):  # every caller gets exactly its own rows, in order
        np.testing.assert_array_equal(out, answer(x))
    return batches


def answer(x: np.ndarray) -> np.ndarray:
    total = x.sum(1, dtype=np.float64) * (1 / 255 if x.dtype == np.uint8 else 1)
    return np.stack([total, -total], 1)


def test_concurrent_requests_share_forward_passes_and_get_their_own_rows():
    sizes = [1, 3, 2, 1, 5, 1, 1, 2, 4, 1] * 3
    batches = run_batcher(max_batch_size=8, max_wait_ms=20, sizes=sizes)
    assert sum(batches) == sum(sizes) and max(batches) <= 8
    assert len(batches) < len(sizes) and max(batches) > 1  # batches formed


def test_batch_size_one_is_one_pass_per_request_and_big_requests_are_not_split():
    assert run_batcher(max_batch_size=1, max_wait_ms=5, sizes=[1, 1, 1, 1]) == [1, 1, 1, 1]
    assert run_batcher(max_batch_size=4, max_wait_ms=5, sizes=[6]) == [6]


def test_pixels_and_scaled_floats_never_share_a_forward_pass():
    # uint8 rows are raw pixels, float rows are already scaled: a mixed batch would upcast the pixels.
    batches = run_batcher(max_batch_size=64, max_wait_ms=20, sizes=[1] * 12, dtypes=(np.uint8, np.float32))
    assert sum(batches) == 12 and len(batches) >= 2


def test_batcher_refuses_beyond_max_queue():
    async def scenario():
        batcher = MicroBatcher(lambda x: x, max_batch_size=4, max_queue=3)
        batcher.start()
        with pytest.raises(QueueFull):
            await batcher.predict(np.zeros((4, 1), np.float32))
        await batcher.stop()

    asyncio.run(scenario())


# --- a real server process ---------------------------------------------------------------------

def test_real_server_batches_concurrent_callers_and_answers_each_its_own(serve_process, model_fn, cli, tmp_path):
    x, _ = make_images(48, seed=11)
    x = x.astype(np.float32) / 255
    np.savez(tmp_path / "x.npz", x=x)
    reference = cli_predictions(cli, tmp_path, model_fn, tmp_path / "x.npz")

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            responses = await asyncio.gather(*(c.post("/v1/predict", json={"inputs": [row.tolist()]}) for row in x))
            return [r.json()["predictions"][0] for r in responses], (await c.get("/metrics")).text

    with serve_process(model_fn, "--max_wait_ms", "20") as url:
        answers, metrics = asyncio.run(fire(url))
        assert httpx.get(url + "/").headers["content-security-policy"].startswith("default-src 'none'")
        too_big = httpx.post(url + "/v1/predict", content=b"x" * (9 * 1024 * 1024),
                             headers={"Content-Type": "application/json"})
        assert too_big.status_code == 413
    assert_same_predictions(answers, reference)
    rows, passes = metric(metrics, "ptflow_batch_size_sum"), metric(metrics, "ptflow_batch_size_count")
    # Warm-up runs outside the batcher, so every counted pass served these requests.
    assert rows == len(x) and passes < len(x)  # some passes served several callers


def test_real_server_api_key_from_the_environment(serve_process, model_fn):
    with serve_process(model_fn, env={"PTFLOW_API_KEY": "from-env"}) as url:
        body = {"inputs": [[0.5] * 64]}
        assert httpx.post(url + "/v1/predict", json=body).status_code == 401
        ok = httpx.post(url + "/v1/predict", json=body, headers={"Authorization": "Bearer from-env"})
        assert ok.status_code == 200


# --- the command line --------------------------------------------------------------------------

def test_public_address_without_a_key_is_refused(cli, model_fn, monkeypatch):
    monkeypatch.delenv("PTFLOW_API_KEY", raising=False)
    code, _, err = cli("serve", "--model_fn", model_fn, "--host", "0.0.0.0")
    assert code == 2 and "--insecure" in err and "API key" in err
    assert_one_line_error(err)


@pytest.mark.parametrize("flags, code, words", [
    (["--max_batch_size", "0"], 2, "--max_batch_size"),
    (["--max_wait_ms", "-1"], 2, "--max_wait_ms"),
    (["--max_body_mb", "0"], 2, "--max_body_mb"),
])
def test_bad_serve_flags_exit_2(cli, model_fn, flags, code, words):
    status, _, err = cli("serve", "--model_fn", model_fn, *flags)
    assert status == code and words in err
    assert_one_line_error(err)


def test_missing_model_and_busy_port_exit_1(cli, model_fn, tmp_path):
    import socket

    code, _, err = cli("serve", "--model_fn", tmp_path / "absent.safetensors")
    assert code == 1
    assert_one_line_error(err)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = cli("serve", "--model_fn", model_fn, "--port", taken.getsockname()[1])
    assert code == 1 and "cannot listen" in err
    assert_one_line_error(err)


def test_help_does_not_import_the_serving_stack():
    code = ("import sys; from ptflow.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('fastapi', 'torch', 'onnx', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
