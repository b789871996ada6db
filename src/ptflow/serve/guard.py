"""The checks every HTTP request meets before any route sees it: Host, the body limit, HEAD, metrics.

- Host: exactly one, well formed (RFC 9112 section 3.2: otherwise 400), and without an API key
  a loopback or --allowed_hosts name (403, against DNS rebinding).
- HEAD is answered as GET would be, headers and status alike, with the body left out (RFC 9110
  section 9.3.2): probes and monitors that use HEAD see what GET would say.

A pure ASGI middleware, so it costs a few microseconds and never buffers a body. The checks that
must act before a request is even parsed (the connection cap, the time to receive a request)
live in connections.py, inside the HTTP protocol.
"""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse

from ptflow.serve.metrics import Metrics
from ptflow.serve.payloads import RequestError
from ptflow.serve.security import host_allowed, host_well_formed
from ptflow.serve.settings import Settings


def _without_body(send):
    """send, with every body chunk emptied: HEAD gets GET's status and headers only."""

    async def send_without_body(message):
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_without_body


class Guard:
    def __init__(self, app, metrics: Metrics, settings: Settings):
        self.app, self.metrics, self.limit = app, metrics, settings.max_body_bytes
        # With an API key, every prediction is authenticated and the Host does not matter; without
        # one, only loopback names (and --allowed_hosts) are answered: see security.host_allowed.
        self.check_host = not settings.keyed
        self.allowed_hosts = settings.host_names

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, limit, received = time.perf_counter(), 500, self.limit, 0
        head = scope["method"] == "HEAD"
        if head:  # the route runs as for GET; its body is dropped on the way out
            scope, send = {**scope, "method": "GET"}, _without_body(send)
        refusal = self._refusal(scope["headers"], scope["http_version"])
        if refusal is not None:
            response = JSONResponse({"detail": refusal[1]}, refusal[0], headers={"Connection": "close"})
            await response(scope, receive, send)
            self.metrics.observe_request(scope["path"], refusal[0], time.perf_counter() - start)
            return

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # a chunked body, or one longer than it said
                raise RequestError(413, f"request body larger than the {limit:,} bytes allowed")
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

    def _refusal(self, headers: list[tuple[bytes, bytes]], http_version: str) -> tuple[int, str] | None:
        host, hosts = None, 0
        for key, value in headers:
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                return 413, f"request body larger than the {self.limit:,} bytes allowed"
            if key == b"host":
                host, hosts = value, hosts + 1
        # Two Host headers could name two different servers to two different readers (a proxy, us).
        if hosts > 1:
            return 400, "more than one Host header"
        if host is None and http_version == "1.1":
            return 400, "an HTTP/1.1 request needs a Host header"
        if host is not None and not host_well_formed(host):
            return 400, "the Host header is not a host name or address with an optional port"
        if self.check_host and not host_allowed(host, self.allowed_hosts):
            shown = host.decode("latin-1")[:100] if host is not None else "none"
            return 403, (f"Host {shown!r} is not allowed: without an API key this server answers only "
                         f"loopback names (and --allowed_hosts)")
        return None

