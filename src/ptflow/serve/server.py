"""Running the app: load the model, bind the socket, hand both to uvicorn, in one process or N.

The model is loaded before the port is bound, so a bad file is a one-line error and never a
server that answers 503 forever. With `--workers N` the socket is bound here, once (so `--port 0`
still prints the one port), and uvicorn's supervisor starts N worker processes that accept on it,
restarts any that dies, and on SIGTERM or Ctrl+C stops them gracefully: each finishes the requests
it holds, its micro-batcher's queue included, before it exits. The workers count into shared
Prometheus files (metrics.py), so /metrics describes the whole server whichever worker answers.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import socket
import tempfile
from pathlib import Path

from ptflow.console import info
from ptflow.errors import PtflowError
from ptflow.serve.security import check_exposure
from ptflow.serve.settings import Settings


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, or a one-line error (port taken, unknown host)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise PtflowError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class Worker:
    """The ASGI app as uvicorn is given it, in the serving process or in each of N workers.

    Picklable (a model file name, Settings, a flag), so uvicorn's supervisor can hand it to
    worker processes, where it builds the real app on first use. The connection limits
    (connections.py) read their settings and metrics from it.
    """

    def __init__(self, model, settings: Settings, trust_code: bool = False):
        self.model, self.settings, self.trust_code = model, settings, trust_code
        self._app = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_app": None}

    @property
    def app(self):
        if self._app is None:
            import torch

            from ptflow.serve.app import create_app

            torch.set_num_threads(self.settings.threads)
            self._app = create_app(self.model, self.settings, trust_code=self.trust_code)
        return self._app

    @property
    def service(self):
        return self.app.state.service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def send_and_freeze(message):
            if message["type"] == "lifespan.startup.complete":
                # Move what start-up allocated (torch, the model, the app) out of the collector's sight: full
                # collections then scan only per-request garbage, instead of stalling requests for ~100 ms.
                gc.freeze()
            await send(message)

        await self.app(scope, receive, send_and_freeze)


def serve_model(model_fn: str, settings: Settings, trust_code: bool = False) -> None:
    check_exposure(settings.host, settings.keyed, settings.insecure, settings.host_names)
    import uvicorn

    from ptflow.devices import resolve_device
    from ptflow.models.files import load_model
    from ptflow.serve.connections import LimitedHttpProtocol

    settings = dataclasses.replace(settings, device=str(resolve_device(settings.device)))  # what the workers use
    loaded = load_model(model_fn, settings.device, trust_code=trust_code)  # fails before binding
    sock = listen(settings.host, settings.port)
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    workers = f"{settings.workers} workers, " if settings.workers > 1 else ""
    info(f"Serving {model_fn} at http://{url_host}:{bound_port}/ ({workers}batches of up to "
         f"{settings.max_batch_size}, API key {'required' if settings.keyed else 'not required'}); Ctrl+C stops")
    if settings.workers == 1:
        config = uvicorn.Config(Worker(loaded, settings), **_uvicorn_options(settings), http=LimitedHttpProtocol)
        uvicorn.Server(config).run(sockets=[sock])
        return
    del loaded  # each worker loads its own copy
    _run_workers(Worker(str(Path(model_fn).resolve()), settings, trust_code), settings, sock)


def _run_workers(worker: Worker, settings: Settings, sock: socket.socket) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ptflow.serve.connections import LimitedHttpProtocol

    shared = tempfile.mkdtemp(prefix="ptflow-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared  # read by prometheus_client in each worker as it starts
    try:
        # A worker importing torch on a busy machine can take a while to answer the supervisor's pings.
        config = uvicorn.Config(worker, **_uvicorn_options(settings), http=LimitedHttpProtocol,
                                workers=settings.workers, timeout_worker_healthcheck=30)
        Multiprocess(config, sockets=[sock]).run()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _uvicorn_options(settings: Settings) -> dict:
    return {"log_level": "warning", "access_log": settings.access_log, "server_header": False,
            "timeout_graceful_shutdown": 5, "lifespan": "on"}
