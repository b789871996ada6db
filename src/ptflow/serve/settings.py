"""Every setting and limit of `ptflow serve`, in one object that the flags and the server both read.

Each field carries its default, the reason for it and its help line; `ptflow serve`'s flags are
made from these fields (cli/serve.py), and the server takes a `Settings` and nothing else. To
change a limit, change it here. Pure Python: `ptflow serve --help` imports no web framework.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from ptflow.errors import UsageError


def setting(default, help: str, metavar: str | None = None, flag: bool = True):
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar, "flag": flag})


@dataclass
class Settings:
    # --- where it listens ---
    host: str = setting("127.0.0.1", "address to bind (this machine only unless told otherwise)")
    port: int = setting(8000, "port (0 picks a free one)")
    api_key: str | None = setting(  # prefer the variable: a flag shows in `ps`
        None, "require 'Authorization: Bearer KEY' on predictions (default: $PTFLOW_API_KEY)", "KEY")
    insecure: bool = setting(False, "allow a non-loopback --host without an API key")
    # --- batching ---
    max_batch_size: int = setting(  # a pass of one row costs almost as much as one of 64 on a CPU
        64, "inputs per forward pass; 1 turns micro-batching off")
    max_wait_ms: float = setting(  # 0: batch only what queues up while a pass runs, a lone request waits for nothing
        0.0, "extra wait for a fuller batch, in ms")
    max_queue: int = setting(1024, "inputs waiting before new requests get 503 + Retry-After")
    # --- what one request may carry ---
    max_inputs: int = setting(256, "inputs or images per request")
    max_body_mb: float = setting(8.0, "request body limit in MiB", "MB")
    max_image_pixels: int = setting(  # checked from the header, before a pixel is decoded: bombs cost nothing
        16_000_000, "pixels per image", "N")
    # --- the process ---
    threads: int = setting(1, "torch threads for inference")  # micro-batches are small; the event loop needs a core
    access_log: bool = setting(False, "log every request (/metrics counts them anyway)")
    device: str = setting("cpu", "where the model runs", flag=False)  # the CLI's --device/--gpu_id set it

    def __post_init__(self):
        if self.api_key is None:
            self.api_key = os.environ.get("PTFLOW_API_KEY") or None
        for name in ("max_batch_size", "max_queue", "max_inputs", "max_image_pixels", "threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.max_body_mb) and self.max_body_mb > 0):
            raise UsageError(f"--max_body_mb must be > 0, got {self.max_body_mb}")
        if not (math.isfinite(self.max_wait_ms) and 0 <= self.max_wait_ms <= 1000):
            raise UsageError(f"--max_wait_ms must be within [0, 1000], got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be within 0..65535, got {self.port}")
        if self.max_inputs > self.max_queue:
            raise UsageError(f"--max_inputs {self.max_inputs} is above --max_queue {self.max_queue}: "
                             f"a full request could never be queued")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def flags() -> list[dataclasses.Field]:
    """The fields that are `ptflow serve` flags."""
    return [f for f in dataclasses.fields(Settings) if f.metadata["flag"]]
