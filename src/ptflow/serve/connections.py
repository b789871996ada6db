"""Limits on connections themselves, enforced inside uvicorn's HTTP protocol, before the app sees them.

- At most --max_connections open per worker: one more is answered 503 and closed at once,
  instead of being parsed.
- A client has --request_timeout_s from its first byte (or from connecting) to deliver a whole
  request, headers and body; past that it gets 408 and the connection is closed.
- A request's line and headers may take --max_header_kb; past that, 431 and closed (uvicorn and
  httptools keep appending to the URL and headers for as long as they come). uvicorn alone
  keeps a connection that trickles a byte every few seconds open for ever (its keep-alive timeout
  only covers the silence between requests), so twenty such clients would hold twenty
  connections indefinitely.
Both answers are written straight to the socket: the app never runs for them.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _canned(status: str, detail: str, extra: str = "") -> bytes:
    body = orjson.dumps({"detail": detail})
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n").encode() + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap and a deadline to receive each request.

    Settings and metrics come from the app uvicorn was given: a `server.Worker`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        worker = self.config.app
        self.settings, self.metrics = worker.settings, worker.service.metrics
        self._deadline: asyncio.TimerHandle | None = None
        self._started: float | None = None  # loop time the current request (or the connection) began
        self._refused = False
        self._headers_done, self._header_bytes = False, 0
        self._max_header_bytes = self.settings.max_header_kb * 1024

    def connection_made(self, transport) -> None:
        if len(self.connections) >= self.settings.max_connections:
            self._refused = True
            transport.write(_canned("503 Service Unavailable", f"more than {self.settings.max_connections} "
                                    "connections open; retry shortly", "retry-after: 1\r\n"))
            transport.close()
            self.metrics.refused.labels("too_many").inc()
            return
        super().connection_made(transport)
        self.metrics.connections.inc()
        self._arm()

    def connection_lost(self, exc) -> None:
        if self._refused:
            return
        self._started = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.metrics.connections.dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if not self._headers_done and not self.transport.is_closing():
            # Counted after parsing: a read that also completed the headers is not held against them.
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes:
                self.metrics.refused.labels("headers_too_large").inc()
                self.transport.write(_canned("431 Request Header Fields Too Large", f"request line and headers "
                                             f"larger than {self.settings.max_header_kb} KiB"))
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done, self._header_bytes = False, 0
        self._arm()  # a keep-alive connection's next request: a new deadline from its first byte

    def on_headers_complete(self) -> None:
        self._headers_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self) -> None:
        """A request (or a connection) starts: its deadline is now + the timeout.

        The timer is lazy: one per connection, left running between requests and re-aimed when it
        fires early, so a request costs an assignment, not a timer scheduled and cancelled (~2 us
        of the event loop's time, which serves every connection).
        """
        if self._started is None:
            self._started = self.loop.time()
        if self._deadline is None:
            self._deadline = self.loop.call_at(self._started + self.settings.request_timeout_s, self._check)

    def _disarm(self) -> None:
        self._started = None  # between requests uvicorn's keep-alive timeout applies, not this one

    def _check(self) -> None:
        self._deadline = None
        if self._started is None or self.transport.is_closing():
            return  # idle: the next request arms a timer again
        due = self._started + self.settings.request_timeout_s
        if self.loop.time() < due:  # a later request than the one the timer was set for
            self._deadline = self.loop.call_at(due, self._check)
            return
        self._too_slow()

    def _too_slow(self) -> None:
        self._started = None
        self.metrics.refused.labels("timeout").inc()
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_canned("408 Request Timeout", f"the request did not arrive whole within "
                                         f"{self.settings.request_timeout_s:g} s"))
        if self.cycle is not None:  # an app reading the body sees the client gone, and writes nothing more
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()
