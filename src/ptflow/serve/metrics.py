"""The server's Prometheus metrics: counters, histograms and gauges in the text exposition format.

Small on purpose: every observation happens on the event loop's thread, so no locks are needed,
and an observation is a bisect and two additions, cheap enough for every request.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        out, total = [], 0
        for bound, count in zip((*self.buckets, math.inf), self.counts):
            total += count
            out.append(f"{name}_bucket{_labels({**labels, 'le': _number(float(bound))})} {total}")
        out.append(f"{name}_sum{_labels(labels)} {_number(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {total}")
        return out


class Metrics:
    """What the server counts: requests by path and status, latency, batch sizes, queue depth."""

    def __init__(self, paths: set[str], queue_depth: Callable[[], int] = lambda: 0, info: dict | None = None):
        self.paths = paths  # known routes; anything else is counted as "other" to bound the label set
        self.queue_depth = queue_depth
        self.info = info or {}
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.inference = Histogram(LATENCY_BUCKETS)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        path = path if path in self.paths else "other"
        key = (path, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(path)
        if histogram is None:
            histogram = self.latency[path] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.inference.observe(seconds)

    def render(self) -> str:
        lines = ["# HELP ptflow_requests_total HTTP requests answered, by path and status.",
                 "# TYPE ptflow_requests_total counter"]
        for (path, status), count in sorted(self.requests.items()):
            lines.append(f"ptflow_requests_total{_labels({'path': path, 'status': str(status)})} {count}")
        lines += ["# HELP ptflow_request_duration_seconds Time from request to response, by path.",
                  "# TYPE ptflow_request_duration_seconds histogram"]
        for path, histogram in sorted(self.latency.items()):
            lines += histogram.lines("ptflow_request_duration_seconds", {"path": path})
        lines += ["# HELP ptflow_batch_size Inputs per forward pass.", "# TYPE ptflow_batch_size histogram",
                  *self.batch_size.lines("ptflow_batch_size", {}),
                  "# HELP ptflow_inference_seconds Time of one forward pass in the inference thread.",
                  "# TYPE ptflow_inference_seconds histogram",
                  *self.inference.lines("ptflow_inference_seconds", {}),
                  "# HELP ptflow_queue_depth Inputs waiting for a forward pass.", "# TYPE ptflow_queue_depth gauge",
                  f"ptflow_queue_depth {self.queue_depth()}",
                  "# HELP ptflow_model_info The model being served.", "# TYPE ptflow_model_info gauge",
                  f"ptflow_model_info{_labels(self.info)} 1"]
        return "\n".join(lines) + "\n"
