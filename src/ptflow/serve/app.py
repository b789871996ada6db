"""`ptflow serve`: a model behind a REST API and a draw-a-digit page (FastAPI + uvicorn).

`create_app(model, settings)` builds the app; its lifespan loads the model (with the safe loader)
and warms it up in the inference thread while the server already answers /healthz, and /readyz
says 503 until then. Predictions go through `MicroBatcher` (batching.py), request bodies through
payloads.py, images through `ptflow predict`'s own preprocessing (imaging.py).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from ptflow import __version__
from ptflow.console import info, warn
from ptflow.errors import PtflowError
from ptflow.models.files import LoadedModel, load_model
from ptflow.models.inference import predict_proba, prediction_rows
from ptflow.serve import payloads
from ptflow.serve.batching import MicroBatcher, QueueFull
from ptflow.serve.metrics import Metrics
from ptflow.serve.security import bearer, page_and_csp
from ptflow.serve.settings import Settings

PATHS = {"/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/predict", "/v1/predict/image"}


class Guard:
    """Pure ASGI middleware: the body-size limit (413) and request metrics, for every request."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, limit, received = time.perf_counter(), 500, self.max_body_bytes, 0
        too_large = f"request body larger than the {limit:,} bytes allowed"
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                response = JSONResponse({"detail": too_large}, 413, headers={"Connection": "close"})
                await response(scope, receive, send)
                self.metrics.observe_request(scope["path"], 413, time.perf_counter() - start)
                return

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # a chunked body, or one longer than it said
                raise HTTPException(413, too_large)
            return message

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_and_record)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - start)


class Service:
    """The model, its batcher and the app's state, shared by the endpoints."""

    def __init__(self, model: LoadedModel | str | Path, settings: Settings):
        self.settings = settings
        self.source = model
        self.loaded: LoadedModel | None = model if isinstance(model, LoadedModel) else None
        self.ready = False
        self.error: str | None = None
        self.batcher = MicroBatcher(self._predict, settings.max_batch_size, settings.max_wait_ms,
                                    settings.max_queue, on_batch=lambda rows, s: self.metrics.observe_batch(rows, s))
        self.metrics = Metrics(PATHS, queue_depth=lambda: self.batcher.depth)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return predict_proba(self.loaded, x)

    def _load_and_warm_up(self) -> None:
        if self.loaded is None:
            self.loaded = load_model(self.source, self.settings.device)
        for rows in sorted({1, self.settings.max_batch_size}):  # allocate the buffers real batches use
            for _ in range(3):
                self._predict(np.zeros((rows, *self.loaded.input_shape), np.float32))

    async def start(self) -> None:
        try:
            await self.batcher.run_in_thread(self._load_and_warm_up)
        except Exception as exc:  # the server stays up to say why on /readyz
            self.error = str(exc) if isinstance(exc, PtflowError) else f"{type(exc).__name__}: {exc}"
            warn(f"model not loaded: {self.error}")
            return
        meta = self.loaded.meta
        self.model_id = meta["sha256"]
        self.value_range = (0.0, 1.0) if len(self.loaded.input_shape) == 3 else None
        self.metrics.info = {"sha256": meta["sha256"], "architecture": meta["model"], "name": self.name}
        self.ready = True
        info(f"ready: {self.name} ({meta['model']}, {len(self.loaded.classes)} classes, sha256 {self.model_id[:12]})")

    @property
    def name(self) -> str:
        path = Path(self.loaded.meta["path"])
        return path.parent.name if path.stem == "model" else path.stem  # a run folder names its model.safetensors

    def describe(self) -> dict:
        meta, loaded = self.loaded.meta, self.loaded
        return {"id": self.model_id, "name": self.name, "architecture": meta["model"], "dataset": meta.get("dataset"),
                "classes": loaded.classes, "input_shape": list(loaded.input_shape),
                "input_range": list(self.value_range) if self.value_range else None,
                "image_style": meta.get("image_style"), "preprocessing": meta["preprocessing"],
                "metrics": meta.get("metrics", {}), "sha256": meta["sha256"],
                "max_inputs": self.settings.max_inputs, "auth_required": self.settings.api_key is not None}

    def require_ready(self) -> LoadedModel:
        if not self.ready:
            detail = f"model failed to load: {self.error}" if self.error else "the model is still loading"
            raise HTTPException(503, detail, headers={"Retry-After": "1"})
        return self.loaded

    async def answer(self, names: list[str], x: np.ndarray) -> Response:
        try:
            probs = await self.batcher.predict(x)
        except QueueFull as exc:
            raise HTTPException(503, f"server busy: {exc}; retry shortly", headers={"Retry-After": "1"}) from None
        body = {"model_id": self.model_id, "predictions": prediction_rows(names, probs, self.loaded.classes)}
        return Response(orjson.dumps(body), media_type="application/json")


def create_app(model: LoadedModel | str | Path, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    service = Service(model, settings)
    html, csp = page_and_csp()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        warm_up = asyncio.create_task(service.start())  # /healthz answers while this runs
        yield
        warm_up.cancel()
        await service.batcher.stop()

    app = FastAPI(title="ptflow", version=__version__, lifespan=lifespan,
                  description="Predictions from a ptflow model. JSON inputs of image models are pixels / 255.")
    app.state.service = service
    app.add_middleware(Guard, metrics=service.metrics, max_body_bytes=settings.max_body_bytes)
    guarded = [Depends(bearer(settings.api_key))] if settings.api_key else []

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):  # a bug: log it, never show a traceback
        return JSONResponse({"detail": f"internal server error ({type(exc).__name__})"}, 500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(html, headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})

    @app.get("/healthz", summary="the process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="200 once the model is loaded and warmed up, 503 before",
             responses={503: payloads.ERRORS[503]})
    async def readyz():
        service.require_ready()
        return {"status": "ready"}

    @app.get("/v1/model", response_model=payloads.ModelInfo, summary="what is being served",
             responses={503: payloads.ERRORS[503]})
    async def model_info():
        service.require_ready()
        return service.describe()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/predict", response_model=payloads.PredictResponse, dependencies=guarded,
              summary="predict from JSON inputs or base64 images", responses=payloads.ERRORS,
              openapi_extra=payloads.JSON_BODY)
    async def predict(request: Request):
        loaded = service.require_ready()
        payloads.require_media_type(request.headers.get("content-type"), "application/json")
        payload = payloads.parse_json(await request.body())
        if "inputs" in payload:
            x = payloads.json_inputs(payload["inputs"], loaded.input_shape, settings.max_inputs,
                                     service.value_range)
            return await service.answer([f"inputs[{i}]" for i in range(len(x))], x)
        images = payloads.base64_images(payload["images"], settings.max_inputs)
        return await _answer_images(images)

    @app.post("/v1/predict/image", response_model=payloads.PredictResponse, dependencies=guarded,
              summary="predict from uploaded image files (multipart/form-data)", responses=payloads.ERRORS,
              openapi_extra=payloads.MULTIPART_BODY)
    async def predict_image(request: Request):
        service.require_ready()
        payloads.require_media_type(request.headers.get("content-type"), "multipart/form-data")
        return await _answer_images(await payloads.form_files(request, settings.max_inputs))

    async def _answer_images(images: list[tuple[str, bytes]]) -> Response:
        loaded = service.loaded
        x = await run_in_threadpool(payloads.decode_images, images, loaded.input_shape,
                                    loaded.meta.get("image_style", "resize"), settings.max_image_pixels)
        return await service.answer([name for name, _ in images], x)

    return app
