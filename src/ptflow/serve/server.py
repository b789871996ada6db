"""Running the app: load the model, bind the socket, hand both to uvicorn.

The model is loaded before the port is bound, so a bad file is a one-line error and never a
server that answers 503 forever.
"""

from __future__ import annotations

import gc
import socket

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


def run(model_fn: str, settings: Settings, trust_code: bool = False) -> None:
    check_exposure(settings.host, settings.api_key, settings.insecure)
    import torch
    import uvicorn

    from ptflow.devices import resolve_device
    from ptflow.models.files import load_model
    from ptflow.serve.app import create_app

    loaded = load_model(model_fn, resolve_device(settings.device), trust_code=trust_code)  # fails before binding
    sock = listen(settings.host, settings.port)
    torch.set_num_threads(settings.threads)
    app = create_app(loaded, settings)
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    info(f"Serving {model_fn} at http://{url_host}:{bound_port}/ (batches of up to {settings.max_batch_size}, "
         f"API key {'required' if settings.api_key else 'not required'}); Ctrl+C stops")
    # Move what start-up allocated (torch, the model, the app) out of the collector's sight: full
    # collections then scan only per-request garbage, instead of stalling requests for ~100 ms at load.
    gc.freeze()
    config = uvicorn.Config(app, log_level="warning", access_log=settings.access_log, timeout_graceful_shutdown=5,
                            server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
