"""Every setting and limit of `ptflow serve`, in one object that the flags and the server both read.

Each field carries its default, the reason for it, its help line and the range it must lie in;
`ptflow serve`'s flags are made from these fields (cli/serve.py), and the server takes a
`Settings` and nothing else. To change a limit, change it here. Settings are checked once, when
made: a value out of range, or two that contradict each other, is a usage error naming the flag,
never a server that starts and then answers 503 forever. Pure Python: `ptflow serve --help`
imports no web framework.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from ptflow.errors import UsageError


def setting(default, help: str, metavar: str | None = None, flag: bool = True, low=None, high=None):
    """A field: its default, help line, and the closed range [low, high] its value must lie in."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar, "flag": flag,
                                                        "low": low, "high": high})


@dataclass
class Settings:
    # --- where it listens, and to whom it answers ---
    host: str = setting("127.0.0.1", "address to bind (this machine only unless told otherwise)")
    port: int = setting(8000, "port (0 picks a free one)", low=0, high=65535)
    api_key: str | None = setting(  # prefer the variable: a flag shows in `ps`
        None, "require 'Authorization: Bearer KEY' on predictions (default: $PTFLOW_API_KEY; an empty key is "
              "an error)", "KEY")
    insecure: bool = setting(False, "allow a non-loopback --host without an API key")
    allowed_hosts: str = setting(  # without a key, a page on another site could reach us by DNS rebinding
        "", "without an API key, also answer requests whose Host header is one of these comma-separated "
            "names ('*': any); loopback names are always allowed", "NAMES")
    # --- processes ---
    workers: int = setting(  # one model copy and one micro-batcher each; the kernel spreads connections
        1, "server processes sharing the port", "N", low=1, high=64)
    threads: int = setting(  # micro-batches are small; the event loop needs a core
        1, "torch threads for inference, per worker", low=1, high=256)
    decode_workers: int = setting(  # decoding holds a core per image; more processes, more cores taken from inference
        1, "processes per worker that decode images and parse large bodies, off the event loop", "N", low=1, high=64)
    # --- batching ---
    max_batch_size: int = setting(  # a pass of one row costs almost as much as one of 64 on a CPU
        64, "inputs per forward pass; 1 turns micro-batching off", low=1, high=4096)
    max_wait_ms: float = setting(  # 0: batch only what queues up while a pass runs, a lone request waits for nothing
        0.0, "extra wait for a fuller batch, in ms", low=0.0, high=1000.0)
    max_queue: int = setting(  # images being decoded count too: decoding is the costly part of an image request
        1024, "inputs waiting (or being decoded) before new requests get 503 + Retry-After", low=1, high=1_000_000)
    # --- what one request may carry, and how long it may take to arrive ---
    max_inputs: int = setting(256, "inputs or images per request", low=1, high=65_536)
    max_body_mb: float = setting(8.0, "request body limit in MiB", "MB", low=0.001, high=1024.0)
    max_header_kb: int = setting(  # the body has its limit; without this one a URL or header could grow without end
        64, "request line and headers limit in KiB (431 beyond; a URL longer than this alone: 414)", "KB",
        low=1, high=1024)
    max_image_pixels: int = setting(  # checked from the header, before a pixel is decoded: bombs cost nothing
        16_000_000, "pixels per image (PIL's own bomb limit is set to the same)", "N", low=1, high=1_000_000_000)
    max_request_pixels: int = setting(  # ~0.35 s of decoding on one core: many images may not add up to minutes
        16_000_000, "pixels of all the images of one request together", "N", low=1, high=1_000_000_000)
    request_timeout_s: float = setting(  # 8 MiB in 30 s needs ~2.2 Mbit/s; slower clients belong behind a proxy
        30.0, "seconds a client has to send a whole request, headers and body, before 408", "S",
        low=0.1, high=3600.0)
    max_connections: int = setting(  # each held connection costs a file descriptor and a little memory
        256, "open connections per worker; at the cap a newcomer takes the place of the connection waiting "
             "longest on its client (503 to it), or gets 503 if every one is being answered", "N",
        low=1, high=100_000)
    inline_body_kb: float = setting(  # parsing 64 KiB of JSON takes ~0.5 ms; 8 MiB ~150 ms holding the GIL
        64.0, "JSON bodies up to this size are parsed on the event loop, larger ones in the decode processes",
        flag=False, low=0.0, high=1024 * 1024)
    # --- the rest ---
    access_log: bool = setting(False, "log every request (/metrics counts them anyway)")
    device: str = setting("cpu", "where the model runs", flag=False)  # the CLI's --device/--gpu_id set it

    def __post_init__(self):
        self.api_key = _api_key(self.api_key)
        for field in dataclasses.fields(self):
            _check_range(field, getattr(self, field.name))
        _require(self.max_inputs <= self.max_queue, f"--max_inputs {self.max_inputs} is above --max_queue "
                 f"{self.max_queue}: a full request could never be queued")
        _require(self.max_batch_size <= self.max_queue, f"--max_batch_size {self.max_batch_size} is above "
                 f"--max_queue {self.max_queue}: a batch that size could never gather")
        _require(self.max_image_pixels <= self.max_request_pixels, f"--max_image_pixels {self.max_image_pixels} "
                 f"is above --max_request_pixels {self.max_request_pixels}: such an image could never be sent")

    @property
    def keyed(self) -> bool:
        """Whether an API key is set: the one test that authentication, the Host rule, the exposure
        check and /v1/model all use (after __post_init__, api_key is None or a usable key)."""
        return self.api_key is not None

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def inline_body_bytes(self) -> int:
        return int(self.inline_body_kb * 1024)

    @property
    def host_names(self) -> frozenset[str]:
        """--allowed_hosts as lower-case names."""
        return frozenset(name.strip().lower() for name in self.allowed_hosts.split(",") if name.strip())


def _api_key(given: str | None) -> str | None:
    """--api_key, else $PTFLOW_API_KEY, else None; a key that is set but could never be sent is a usage error.

    An empty key is what `--api_key "$KEY"` or `PTFLOW_API_KEY=$KEY` give when KEY is unset: read
    as "no key" it would serve predictions to anyone and lift the Host rule, silently, so it is
    refused rather than guessed at. A client cannot send surrounding blanks or control characters
    in an Authorization header either (parsers strip them), so such a key could never match.
    """
    source = "--api_key"
    if given is None:
        given, source = os.environ.get("PTFLOW_API_KEY"), "$PTFLOW_API_KEY"
    if given is None:
        return None
    if not given.strip():
        raise UsageError(f"{source} is set but empty (an unset shell variable?): give a key, or leave both "
                         "--api_key and $PTFLOW_API_KEY unset to serve without one")
    if given != given.strip() or not all(" " <= c <= "~" for c in given):
        raise UsageError(f"{source} must be printable ASCII without leading or trailing blanks: a client "
                         "could never send any other key in an Authorization header")
    return given


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def _check_range(field: dataclasses.Field, value) -> None:
    low, high = field.metadata["low"], field.metadata["high"]
    if low is None:
        return
    name = f"--{field.name}" if field.metadata["flag"] else field.name
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")
    if not low <= value <= high:
        raise UsageError(f"{name} must be within {low:g}..{high:g}, got {value:g}")


def flags() -> list[dataclasses.Field]:
    """The fields that are `ptflow serve` flags."""
    return [f for f in dataclasses.fields(Settings) if f.metadata["flag"]]
