"""Micro-batching: concurrent requests share one forward pass, run off the event loop.

Why: a forward pass of one row costs almost as much as one of sixty-four (the time goes to
Python and kernel launches, not arithmetic), so under load it pays to stack the rows that are
waiting and run them together. Requests wait in a queue; one collector task takes the first,
then keeps taking until `max_batch_size` rows are in hand or `max_wait_ms` has passed since the
first one arrived, runs the stacked rows in a single inference thread (so the event loop keeps
accepting and parsing requests meanwhile) and hands each caller exactly its own rows back.
While a batch runs, the next one gathers, so under load batches form even with `max_wait_ms` 0.
`max_batch_size` 1 gives one forward pass per request: batching off.

The queue's bound counts rows not yet queued too: a caller may `reserve` rows for work that will
become rows (images being decoded), so that work is refused with 503 before it is done, not after.
`stop` drains: what is queued when the server shuts down is still answered.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np


class QueueFull(Exception):
    """More rows are waiting than `max_queue` allows: the caller should retry later (HTTP 503)."""


class Reservation:
    """Rows counted against the queue before they exist; `predict` or `release` gives them back."""

    def __init__(self, batcher: "MicroBatcher", rows: int):
        self.batcher, self.rows = batcher, rows

    def release(self) -> None:
        if self.rows:
            self.batcher._add_waiting(-self.rows)
            self.rows = 0


@dataclass
class _Request:
    x: np.ndarray  # (n, *input_shape), this caller's rows
    future: asyncio.Future
    arrived: float  # time.monotonic() when queued


class MicroBatcher:
    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 64,
                 max_wait_ms: float = 0.0, max_queue: int = 1024,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_depth: Callable[[int], None] | None = None):
        self.predict_fn = predict  # (N, *input_shape) -> (N, n_classes), called in the inference thread
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch  # called on the event loop with (rows, seconds) after each forward pass
        self.on_depth = on_depth  # called with the new depth whenever it changes
        # One thread: forward passes run one at a time, each using torch's own intra-op threads.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptflow-inference")
        self._queue: deque[_Request] = deque()
        self._rows_waiting = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._idle: asyncio.Event | None = None  # set while no pass is running and nothing is queued
        self._closing = False

    @property
    def depth(self) -> int:
        """Rows waiting for a forward pass, or reserved for one."""
        return self._rows_waiting

    def _add_waiting(self, rows: int) -> None:
        self._rows_waiting += rows
        if self.on_depth is not None:
            self.on_depth(self._rows_waiting)

    def reserve(self, rows: int) -> Reservation:
        """Count `rows` against the queue now, or raise QueueFull."""
        self._check_room(rows)
        self._add_waiting(rows)
        return Reservation(self, rows)

    def _check_room(self, rows: int) -> None:
        if self._closing:
            raise QueueFull("the server is shutting down")
        if self._rows_waiting + rows > self.max_queue:
            raise QueueFull(f"{self._rows_waiting} inputs are already waiting (at most {self.max_queue})")

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ptflow-batcher")

    async def stop(self, timeout: float = 30.0) -> None:
        """Refuse new rows, answer the queued ones (for up to `timeout` seconds), then stop."""
        self._closing = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._drained(), timeout)
            except asyncio.TimeoutError:
                pass
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for request in self._queue:
            if not request.future.done():
                request.future.set_exception(QueueFull("the server shut down before this request's turn"))
        self._queue.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _drained(self) -> None:
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    async def run_in_thread(self, fn: Callable, *args):
        """Run fn(*args) in the inference thread (warm-up uses this, so it runs where inference will)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def predict(self, x: np.ndarray, reservation: Reservation | None = None) -> np.ndarray:
        """This caller's probabilities, (n, n_classes), once its rows have been through a batch.

        A reservation made for these rows is handed over to them (no await in between: no one
        else can take the room meanwhile).
        """
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if reservation is not None:
            reservation.release()
        self._check_room(len(x))
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(x, future, time.monotonic()))
        self._add_waiting(len(x))
        self._idle.clear()
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            self._idle.clear()
            batch = await self._collect()
            if not batch:
                continue
            # |x| = (rows, *input_shape): every caller's rows, stacked in arrival order
            x = batch[0].x if len(batch) == 1 else np.concatenate([r.x for r in batch])
            try:
                probs, seconds = await loop.run_in_executor(self.executor, self._timed_predict, x)
            except Exception as exc:  # a failed pass fails its callers, never the batcher
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            start = 0
            for request in batch:
                stop = start + len(request.x)
                if not request.future.done():  # a caller that went away is skipped
                    request.future.set_result(probs[start:stop])
                start = stop
            if self.on_batch is not None:
                self.on_batch(len(x), seconds)

    def _timed_predict(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        probs = self.predict_fn(x)
        return probs, time.perf_counter() - start

    def _fits(self, x: np.ndarray, first: np.ndarray, rows: int) -> bool:
        # Same dtype only: uint8 rows are raw pixels and float rows are already scaled (see Preprocess),
        # so stacking them would silently turn pixels into out-of-range floats.
        return rows + len(x) <= self.max_batch_size and x.dtype == first.dtype

    async def _collect(self) -> list[_Request]:
        """Take waiting requests until the batch is full or the first one has waited max_wait."""
        batch: list[_Request] = []
        rows = 0
        deadline = self._queue[0].arrived + self.max_wait
        while True:
            # A request is never split: one larger than max_batch_size runs as a batch of its own.
            while self._queue and (not batch or self._fits(self._queue[0].x, batch[0].x, rows)):
                request = self._queue.popleft()
                self._add_waiting(-len(request.x))
                if request.future.done():  # cancelled while waiting
                    continue
                batch.append(request)
                rows += len(request.x)
            remaining = deadline - time.monotonic()
            if rows >= self.max_batch_size or self._queue or remaining <= 0 or not batch:
                return batch
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                pass
