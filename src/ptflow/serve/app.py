"""`ptflow serve`: a model behind a REST API and a draw-a-digit page (FastAPI + uvicorn).

`create_app(model, settings)` builds the app; its lifespan starts the decode processes, loads
the model (with the safe loader) and warms it up in the inference thread. With one worker the
server answers /healthz meanwhile and /readyz says 503 until then; with several, a worker starts
accepting connections only once warm, so no request waits on a cold one. Predictions go through
`MicroBatcher` (batching.py); request bodies through payloads.py, on the event loop when small
and in the decode processes (pool.py) when large; images always in the decode processes, through
images.py and `ptflow predict`'s own preprocessing.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.requests import ClientDisconnect

from ptflow import __version__
from ptflow.console import info, warn
from ptflow.data.imaging import interpolation_of, style_of
from ptflow.errors import PtflowError
from ptflow.models.files import LoadedModel, load_model
from ptflow.models.inference import predict_proba, prediction_rows
from ptflow.serve import images, payloads, schemas
from ptflow.serve.batching import MicroBatcher, QueueFull, Reservation
from ptflow.serve.docs import add_docs
from ptflow.serve.guard import Guard
from ptflow.serve.metrics import CONTENT_TYPE, Metrics
from ptflow.serve.payloads import Parsed, RequestError
from ptflow.serve.pool import DecodePool
from ptflow.serve.security import bearer, page_and_csp
from ptflow.serve.settings import Settings
from ptflow.serve.text import safe_text

PATHS = {"/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/predict", "/v1/predict/image", "/docs",
         "/openapi.json"}


class Service:
    """The model, its batcher, the decode processes and the metrics, shared by the endpoints."""

    def __init__(self, model: LoadedModel | str | Path, settings: Settings, trust_code: bool = False):
        self.settings, self.trust_code = settings, trust_code
        self.source = model
        self.loaded: LoadedModel | None = model if isinstance(model, LoadedModel) else None
        self.ready = False
        self.error: str | None = None
        self.metrics = Metrics(PATHS)
        self.batcher = MicroBatcher(self._predict, settings.max_batch_size, settings.max_wait_ms,
                                    settings.max_queue, on_batch=self.metrics.observe_batch,
                                    on_depth=self.metrics.queue_depth.set)
        self.pool = DecodePool(settings.decode_workers)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return predict_proba(self.loaded, x)

    def _load_and_warm_up(self) -> None:
        if self.loaded is None:
            self.loaded = load_model(self.source, self.settings.device, trust_code=self.trust_code)
        for rows in sorted({1, self.settings.max_batch_size}):  # allocate the buffers real batches use
            for _ in range(3):
                self._predict(np.zeros((rows, *self.loaded.input_shape), np.float32))

    async def start(self) -> None:
        try:
            await asyncio.gather(self.pool.start(), self.batcher.run_in_thread(self._load_and_warm_up))
            self._take_model()
        except Exception as exc:  # the server stays up to say why on /readyz (a failure here is never silent)
            self.error = safe_text(str(exc) if isinstance(exc, PtflowError) else f"{type(exc).__name__}: {exc}")
            warn(f"model not loaded: {self.error}")
            return
        self.ready = True
        info(f"ready: {self.name} ({self.meta['model']}, {len(self.classes)} classes, sha256 {self.model_id[:12]})")

    def _take_model(self) -> None:
        meta = self.meta = safe_text(self.loaded.meta)  # what the file says is sent as JSON, and printed
        self.classes = safe_text(self.loaded.classes)
        self.model_id = meta["sha256"]
        self.value_range = (0.0, 1.0) if len(self.loaded.input_shape) == 3 else None
        self.metrics.set_model(meta["sha256"], meta["model"], self.name)

    async def stop(self) -> None:
        await self.batcher.stop()
        self.pool.stop()
        self.metrics.close()

    @property
    def name(self) -> str:
        path = Path(self.meta["path"])
        return path.parent.name if path.stem == "model" else path.stem  # a run folder names its model.safetensors

    def describe(self) -> dict:
        meta, loaded = self.meta, self.loaded
        return {"id": self.model_id, "name": self.name, "architecture": meta["model"], "dataset": meta.get("dataset"),
                "classes": self.classes, "input_shape": list(loaded.input_shape),
                "input_range": list(self.value_range) if self.value_range else None,
                "image_style": meta.get("image_style"), "crop_pct": meta.get("crop_pct"),
                "interpolation": interpolation_of(meta), "preprocessing": meta["preprocessing"],
                "metrics": meta.get("metrics", {}), "sha256": meta["sha256"],
                "max_inputs": self.settings.max_inputs, "auth_required": self.settings.keyed}

    def require_ready(self) -> LoadedModel:
        if not self.ready:
            detail = f"model failed to load: {self.error}" if self.error else "the model is still loading"
            raise RequestError(503, detail)
        return self.loaded

    async def parse(self, fn, body: bytes, *args) -> Parsed:
        """fn(body, *args): here if the body is small, else in a decode process, counted as one queued input."""
        if len(body) <= self.settings.inline_body_bytes:
            return fn(body, *args)
        reservation = self._reserve(1)
        try:
            return await self.pool.run(fn, body, *args)
        finally:
            reservation.release()

    async def answer(self, parsed: Parsed) -> Response:
        if parsed.x is not None:
            return await self._answer([f"inputs[{i}]" for i in range(len(parsed.x))], parsed.x)
        loaded, settings = self.loaded, self.settings
        reservation = self._reserve(len(parsed.images))  # refused now, before any decoding is spent on it
        try:
            x = await self.pool.run(images.decode_images, parsed.images, loaded.input_shape,
                                    style_of(loaded.meta), settings.max_image_pixels,
                                    settings.max_request_pixels)
            return await self._answer([name for name, _ in parsed.images], x, reservation)
        finally:
            reservation.release()

    def _reserve(self, rows: int) -> Reservation:
        try:
            return self.batcher.reserve(rows)
        except QueueFull as exc:
            raise RequestError(503, f"server busy: {exc}; retry shortly") from None

    async def _answer(self, names: list[str], x: np.ndarray, reservation: Reservation | None = None) -> Response:
        try:
            probs = await self.batcher.predict(x, reservation)
        except QueueFull as exc:
            raise RequestError(503, f"server busy: {exc}; retry shortly") from None
        body = {"model_id": self.model_id, "predictions": prediction_rows(names, probs, self.classes)}
        return Response(orjson.dumps(body), media_type="application/json")


class PrometheusText(Response):
    media_type = CONTENT_TYPE


def add_model_to_schema(app: FastAPI, service: Service) -> None:
    """/openapi.json states the loaded model's input shape and range; until it is loaded, it is not cached."""
    generic = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None and not service.ready:
            app.openapi_schema = None
        if app.openapi_schema is None:
            schema = generic()
            if service.ready:
                body = schemas.json_body(service.settings.max_inputs, service.loaded.input_shape, service.value_range)
                schema["paths"]["/v1/predict"]["post"].update(body)
        return app.openapi_schema

    app.openapi = openapi


def create_app(model: LoadedModel | str | Path, settings: Settings | None = None, trust_code: bool = False) -> FastAPI:
    settings = settings or Settings()
    service = Service(model, settings, trust_code)
    html, csp = page_and_csp()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        warm_up = asyncio.create_task(service.start())
        if settings.workers > 1:  # one of several: take connections only once able to answer them
            await warm_up
        yield
        warm_up.cancel()
        await service.stop()

    app = FastAPI(title="ptflow", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Predictions from a ptflow model. JSON inputs of image models are pixels / 255.")
    app.state.service = service
    app.add_middleware(Guard, metrics=service.metrics, settings=settings)
    guarded = [Depends(bearer(settings.api_key))] if settings.keyed else []
    add_docs(app)
    add_model_to_schema(app, service)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse({"detail": exc.detail}, exc.status, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect):  # nobody to answer; counted as a timed-out request
        return Response(status_code=408)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):  # a bug: log it, never show a traceback
        return JSONResponse({"detail": f"internal server error ({type(exc).__name__})"}, 500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(html, headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})

    @app.get("/healthz", summary="the process is alive", response_model=schemas.Status,
             responses=schemas.PLAIN_ERRORS)
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="200 once the model is loaded and warmed up, 503 before",
             response_model=schemas.Status, responses=schemas.PLAIN_ERRORS)
    async def readyz():
        service.require_ready()
        return {"status": "ready"}

    @app.get("/v1/model", response_model=schemas.ModelInfo, summary="what is being served",
             responses=schemas.PLAIN_ERRORS)
    async def model_info():
        service.require_ready()
        return service.describe()

    @app.get("/metrics", summary="Prometheus metrics of the whole server", response_class=PrometheusText,
             responses=schemas.PLAIN_ERRORS)
    async def metrics():
        return PrometheusText(service.metrics.render())

    @app.post("/v1/predict", response_model=schemas.PredictResponse, dependencies=guarded,
              summary="predict from JSON inputs or base64 images", responses=schemas.PREDICT_ERRORS,
              openapi_extra=schemas.json_body(settings.max_inputs))
    async def predict(request: Request):
        loaded = service.require_ready()
        payloads.require_media_type(request.headers.get("content-type"), "application/json")
        parsed = await service.parse(payloads.parse_predict, await request.body(), loaded.input_shape,
                                     settings.max_inputs, service.value_range)
        return await service.answer(parsed)

    @app.post("/v1/predict/image", response_model=schemas.PredictResponse, dependencies=guarded,
              summary="predict from uploaded image files (multipart/form-data)", responses=schemas.PREDICT_ERRORS,
              openapi_extra=schemas.upload_body(settings.max_inputs))
    async def predict_image(request: Request):
        service.require_ready()
        content_type = request.headers.get("content-type")
        payloads.require_media_type(content_type, "multipart/form-data")
        parsed = await service.parse(payloads.multipart_files, await request.body(), content_type,
                                     settings.max_inputs)
        return await service.answer(parsed)

    return app
