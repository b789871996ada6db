"""The server's Prometheus metrics, for the whole server however many worker processes it has.

prometheus_client does the counting and the exposition format. With `--workers N`, the
supervisor sets PROMETHEUS_MULTIPROC_DIR before starting the workers: each then writes its values
to memory-mapped files there, and whichever worker answers /metrics adds up every worker's
files (its multiprocess mode). Gauges say how they add up: queue depth and open connections are
summed over the live workers, the model's info is the same in all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def multiprocess_dir() -> str | None:
    """The folder the workers share their values through, when there are several workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """What the server counts: requests by path and status, latency, batches, queue, connections."""

    def __init__(self, paths: set[str]):
        disable_created_metrics()  # no `_created` series: the multiprocess mode has none either
        self.paths = paths  # known routes; anything else is counted as "other" to bound the label set
        self.registry = CollectorRegistry()  # one per app: tests build several apps in one process
        r = self.registry
        self.requests = Counter("ptflow_requests", "HTTP requests answered, by path and status.",
                                ["path", "status"], registry=r)
        self.latency = Histogram("ptflow_request_duration_seconds", "Time from request to response, by path.",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ptflow_batch_size", "Inputs per forward pass.", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.inference = Histogram("ptflow_inference_seconds", "Time of one forward pass in the inference thread.",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("ptflow_queue_depth", "Inputs waiting for a forward pass or being decoded.",
                                 registry=r, multiprocess_mode="livesum")
        self.connections = Gauge("ptflow_open_connections", "Client connections open.", registry=r,
                                 multiprocess_mode="livesum")
        self.refused = Counter("ptflow_connections_refused", "Connections closed by the server's limits: "
                               "too_many (--max_connections, every slot answering: 503), shed (at "
                               "--max_connections, the longest waiting on its client: 503), timeout "
                               "(--request_timeout_s, 408), headers_too_large (--max_header_kb, 414 or 431).",
                               ["reason"], registry=r)
        self.workers = Gauge("ptflow_workers", "Worker processes serving.", registry=r,
                             multiprocess_mode="livesum")
        self.model_info = Gauge("ptflow_model_info", "The model being served.", ["sha256", "architecture", "name"],
                                registry=r, multiprocess_mode="livemax")
        self.workers.set(1)
        self._children: dict[tuple[str, int], tuple] = {}  # (path label, status) -> the children to count in

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        label = path if path in self.paths else "other"
        children = self._children.get((label, status))
        if children is None:  # labels() takes a lock and builds keys: once per path and status, not per request
            children = self._children[(label, status)] = (self.requests.labels(label, str(status)),
                                                           self.latency.labels(label))
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.inference.observe(seconds)

    def set_model(self, sha256: str, architecture: str, name: str) -> None:
        self.model_info.labels(sha256, architecture, name).set(1)

    def render(self) -> bytes:
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=folder)
        return generate_latest(registry)

    def close(self) -> None:
        """This worker is stopping: its live gauges (queue, connections, workers) no longer count."""
        if multiprocess_dir() is not None:
            prometheus_multiprocess.mark_process_dead(os.getpid())
