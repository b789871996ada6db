"""The decode processes: where large bodies are parsed and images decoded, off the event loop.

Why processes and not threads: orjson, numpy's list conversion and base64 hold the GIL for the
whole call (an 8 MiB JSON body takes ~150 ms), so in a thread they would still stall every other
request, /healthz included. A bounded pool of `--decode_workers` processes keeps that work on
its own cores and bounds how much of it runs at once; how much may wait is bounded by the
micro-batcher's queue, which counts images being decoded (app.py reserves them first).
The processes are started with `spawn` (never fork a process that runs torch threads) and import
only numpy, PIL, orjson and python-multipart.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from ptflow.console import warn
from ptflow.serve.payloads import RequestError

NICENESS = 10


def _ready() -> bool:
    return True


def _start_decoder(parent: int) -> None:
    from ptflow.serve import images  # noqa: F401 - imported now, so the first request does not pay for it

    # Bulk work yields the CPU to the event loop and the forward passes: on a busy machine the kernel
    # would otherwise share cores evenly, and every request would wait behind a decode.
    os.nice(NICENESS)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """A decoder outlives no server: if its worker is killed outright (SIGKILL), it exits within a second."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


class DecodePool:
    def __init__(self, workers: int):
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_decoder, initargs=(os.getpid(),))

    async def start(self) -> None:
        """Start every process now, so the first request does not pay for their imports."""
        self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _ready) for _ in range(self.workers)))

    async def run(self, fn: Callable, *args):
        """fn(*args) in a decode process; its RequestError comes back as raised."""
        if self._executor is None:
            raise RuntimeError("DecodePool.start() was not called")
        executor = self._executor
        try:
            return await asyncio.wrap_future(executor.submit(fn, *args))
        except BrokenProcessPool:
            # A decoder died (killed for memory, or crashed on a hostile file): replace the pool, once,
            # so the next request is served, and fail the ones that were in it.
            if self._executor is executor:
                warn("a decode process died; starting new ones")
                self._executor = self._new_executor()
                executor.shutdown(wait=False, cancel_futures=True)
            raise RequestError(500, "internal server error (a decode process died)") from None

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
