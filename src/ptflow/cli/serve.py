"""`ptflow serve`: the flags are the fields of serve/settings.py's Settings, one source for both."""

from __future__ import annotations

import argparse

from ptflow.cli.common import add_device_options, add_trust_option, device_of
from ptflow.errors import PtflowError


def register(commands) -> None:
    p = commands.add_parser("serve", help="serve a model over HTTP: REST API, web page, metrics",
                            description="Serve a model: POST /v1/predict (JSON) and /v1/predict/image (uploads), "
                                        "GET / (draw a digit), /v1/model, /healthz, /readyz, /metrics, /docs.")
    from ptflow.serve.settings import flags  # here: only `ptflow serve` needs its settings

    p.add_argument("--model_fn", required=True, metavar="FILE", help="model file to serve")
    for field in flags():
        help = field.metadata["help"]
        if field.type in ("bool", bool):
            p.add_argument(f"--{field.name}", action="store_true", default=argparse.SUPPRESS, help=help)
            continue
        shown = "" if field.default in (None, "") else f" (default: {field.default})"
        kind = {"int": int, "float": float}.get(str(field.type), str)
        p.add_argument(f"--{field.name}", type=kind, default=argparse.SUPPRESS, metavar=field.metadata["metavar"],
                       help=help + shown)
    add_device_options(p)
    add_trust_option(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from ptflow.serve.settings import Settings, flags

    names = {f.name for f in flags()}
    settings = Settings(**{k: v for k, v in vars(args).items() if k in names}, device=device_of(args))
    try:
        from ptflow.serve import server
    except ImportError as exc:
        raise PtflowError(f"ptflow serve needs {exc.name}: pip install 'ptflow[serve]'") from None
    server.serve_model(args.model_fn, settings, trust_code=args.trust_model_code)
    return 0
