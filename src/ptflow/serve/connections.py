"""Limits on connections themselves, enforced inside uvicorn's HTTP protocol, before the app sees them.

- At most --max_connections open per worker. At the cap, a new connection takes the place of the
  one that has waited longest on its client (a request still arriving, or an idle keep-alive
  connection): that one is answered 503 (or, if idle, closed) and the newcomer is served. Only
  when every slot holds a request the server is answering is the newcomer answered 503 at once.
  Why not simply refuse newcomers: then a few hundred half-sent requests (slowloris) hold every
  slot for --request_timeout_s, and every health probe meanwhile gets 503, so an orchestrator
  restarts a healthy server. Why not reserve slots for probes: a probe's path is known only once
  its request line is in, and whoever trickles into the reserve holds it just the same. Shedding
  the longest waiter costs an attacker nothing he keeps: to starve a probe he must open more
  than the cap in the milliseconds between the probe's connect and its request line.
- A client has --request_timeout_s from its first byte (or from connecting) to deliver a whole
  request, headers and body; past that it gets 408 and the connection is closed. uvicorn alone
  keeps a connection that trickles a byte every few seconds open for ever (its keep-alive
  timeout only covers the silence between requests).
- A request's line and headers together may take --max_header_kb: a URL longer than that gets
  414, a request line and headers longer than that 431, closed either way (uvicorn and httptools
  keep appending to the URL and headers for as long as they come). Counted exactly, whether the
  headers come a byte at a time or in one read with the body.
These answers are written straight to the socket: the app never runs for them.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _canned(status: str, detail: str, extra: str = "") -> bytes:
    body = orjson.dumps({"detail": detail})
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n").encode() + body


class _TooLarge(Exception):
    """Raised in a parser callback to stop parsing; uvicorn then calls send_400_response, which says why."""


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
        self._waiting_since: float | None = None  # loop time it began waiting on its client; None: we owe an answer
        self._idle = False  # between requests on a kept-alive connection
        self._refused = False
        self._too_large: str | None = None  # "414" or "431", set just before a callback stops the parser
        self._headers_done, self._raw_bytes, self._url_bytes, self._header_bytes = False, 0, 0, 0
        self._max_header_bytes = self.settings.max_header_kb * 1024

    def connection_made(self, transport) -> None:
        if len(self.connections) >= self.settings.max_connections and not self._shed_longest_waiting():
            self._refused = True
            transport.write(_canned("503 Service Unavailable", f"all {self.settings.max_connections} "
                                    "connections are busy with requests; retry shortly", "retry-after: 1\r\n"))
            transport.close()
            self.metrics.refused.labels("too_many").inc()
            return
        super().connection_made(transport)
        self.metrics.connections.inc()
        self._waiting_since = self.loop.time()
        self._arm()

    def _shed_longest_waiting(self) -> bool:
        """Close the connection that has waited longest on its client, to make room; False if none waits.

        A scan of the open connections, only at the cap (~30 us for 256).
        """
        waiting = [c for c in self.connections if getattr(c, "_waiting_since", None) is not None
                   and not c.transport.is_closing()]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: c._waiting_since)
        victim.metrics.refused.labels("shed").inc()
        if victim._idle:  # nothing asked, nothing owed: a kept-alive connection may be closed at any time
            victim.transport.close()
        else:
            victim._close("503 Service Unavailable", f"the server is at its {self.settings.max_connections} "
                          "connection limit and this request was the slowest to arrive; retry shortly",
                          "retry-after: 1\r\n")
        return True

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
            # Headers still incomplete: httptools holds a partial header line itself, unseen by the
            # callbacks below, so every byte of this request so far counts.
            self._raw_bytes += len(data)
            if self._raw_bytes > self._max_header_bytes:
                self._refuse_too_large("431")

    def on_url(self, url: bytes) -> None:  # called for each piece of the URL as it arrives
        self._url_bytes += len(url)
        if self._url_bytes > self._max_header_bytes:
            self._too_large = "414"
            raise _TooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:  # one whole header line
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._url_bytes + self._header_bytes > self._max_header_bytes:
            self._too_large = "431"
            raise _TooLarge
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which is how a callback above stops the parser."""
        if self._too_large is not None:
            self._refuse_too_large(self._too_large)
        else:
            super().send_400_response(msg)

    def _refuse_too_large(self, status: str) -> None:
        self.metrics.refused.labels("headers_too_large").inc()
        kib = self.settings.max_header_kb
        if status == "414":
            self._close("414 URI Too Long", f"URL longer than {kib} KiB")
        else:
            self._close("431 Request Header Fields Too Large", f"request line and headers larger than {kib} KiB")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done, self._raw_bytes, self._url_bytes, self._header_bytes = False, 0, 0, 0
        self._idle = False
        self._arm()  # a keep-alive connection's next request: a new deadline from its first byte

    def on_headers_complete(self) -> None:
        self._headers_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._waiting_since = None  # the request is whole: the server owes the answer now
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._waiting_since is None:
            self._waiting_since, self._idle = self.loop.time(), True

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
        self.metrics.refused.labels("timeout").inc()
        self._close("408 Request Timeout", f"the request did not arrive whole within "
                    f"{self.settings.request_timeout_s:g} s")

    def _close(self, status: str, detail: str, extra: str = "") -> None:
        """Answer `status` (unless an answer has begun) and close: the request will never be whole."""
        self._started = self._waiting_since = None
        # self.cycle is the previous request's until this one's headers are in
        if not self._headers_done or self.cycle is None or not self.cycle.response_started:
            self.transport.write(_canned(status, detail, extra))
        if self.cycle is not None:  # an app reading the body sees the client gone, and writes nothing more
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()
