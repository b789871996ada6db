"""Text the server sends is valid UTF-8, whatever the model file or the request held.

A model trained on folders with non-UTF-8 names carries class names that Python decoded with
surrogate escapes ('caf\\udce9'), and JSON's "\\ud800" escapes put lone surrogates in any string.
Neither can be encoded as UTF-8: every JSON encoder, the Prometheus exposition and the console
would raise (a 500, or a server that never says it is ready). Such characters are shown as their
escape instead (console.printable's 'caf\\\\xe9'), where foreign text enters the server: once for the
model file, and in every refusal's message.
"""

from __future__ import annotations

from ptflow.console import printable


def safe_text(value):
    """value with every string (in lists and dict keys and values too) made encodable as UTF-8."""
    if isinstance(value, str):
        return printable(value)  # one escape rule for the console, model files and the server
    if isinstance(value, dict):
        return {safe_text(k): safe_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_text(v) for v in value]
    return value
