"""Request bodies -> model inputs, or a `RequestError` naming what is wrong.

Pure functions of bytes, with no web framework: the same code runs on the event loop for small
bodies and in the decode processes (pool.py) for large ones, where an 8 MiB body's ~150 ms of
JSON parsing cannot hold the event loop's GIL. JSON is parsed by hand (orjson, then numpy)
rather than by pydantic: it is the hot path, and a 784-value input validated field by field costs
more than the forward pass. schemas.py describes the same bodies for the OpenAPI schema.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np
import orjson

from ptflow.data.inputs import check_inputs
from ptflow.errors import PtflowError, shown
from ptflow.serve.text import safe_text


class RequestError(Exception):
    """A request refused: an HTTP status and a one-line message (picklable: raised in the decode processes too)."""

    def __init__(self, status: int, detail: str):
        detail = safe_text(detail)  # it may quote the request: always encodable, never a 500 instead
        super().__init__(status, detail)
        self.status, self.detail = status, detail


@dataclass
class Parsed:
    """A prediction request's body, parsed: model inputs, or images still to decode."""

    x: np.ndarray | None = None  # (N, *input_shape) float32, from {"inputs": ...}
    images: list[tuple[str, bytes]] | None = None  # [(name, encoded bytes)], from {"images": ...} or an upload


def require_media_type(content_type: str | None, expected: str) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != expected:
        raise RequestError(415, f"expected Content-Type {expected}, got {media_type or 'none'}")


def parse_predict(body: bytes, input_shape: tuple[int, ...], max_inputs: int,
                  value_range: tuple[float, float] | None) -> Parsed:
    """A POST /v1/predict body -> Parsed."""
    payload = parse_json(body)
    if "inputs" in payload:
        # numpy reads true as 1.0 beside numbers. An inputs body holds numbers, brackets and the key
        # "inputs" only (anything else is refused anyway), so a search of the bytes finds every
        # boolean, at memchr speed, where checking each value in Python would cost more than the model.
        if b"true" in body or b"false" in body:
            raise RequestError(422, "inputs: every value must be a number (true and false are not)")
        return Parsed(x=json_inputs(payload["inputs"], input_shape, max_inputs, value_range))
    return Parsed(images=base64_images(payload["images"], max_inputs))


def parse_json(body: bytes) -> dict:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # the standard parser accepts NaN and Infinity, so the value check can name them
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise RequestError(400, "the request body is not valid JSON") from None
        _require_unicode(payload)
    if not isinstance(payload, dict):
        raise RequestError(422, 'expected a JSON object: {"inputs": [...]} or {"images": [...]}')
    unknown = set(payload) - {"inputs", "images"}
    if unknown:
        names = ", ".join(sorted(unknown))[:200]
        raise RequestError(422, f"unknown field(s) {names}: expected \"inputs\" or \"images\"")
    if ("inputs" in payload) == ("images" in payload):
        raise RequestError(422, 'send exactly one of "inputs" and "images"')
    return payload


def _require_unicode(payload) -> None:
    """Refuse lone surrogates ("\\ud800"), as orjson does: the standard parser lets them through."""
    try:
        orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        if "surrogates" in str(exc):
            raise RequestError(400, "the request body is not valid JSON: a string holds a lone surrogate "
                                    "escape (\\ud800-\\udfff), which is not text") from None


def _check_count(items, field: str, max_inputs: int) -> None:
    if not isinstance(items, list) or not items:
        raise RequestError(422, f'"{field}" must be a non-empty list')
    if len(items) > max_inputs:
        raise RequestError(422, f'{len(items)} {field} in one request; at most {max_inputs} are allowed')


def json_inputs(inputs, input_shape: tuple[int, ...], max_inputs: int,
                value_range: tuple[float, float] | None) -> np.ndarray:
    """{"inputs": [...]} -> float32 (N, *input_shape), or a 422 naming the problem."""
    _check_count(inputs, "inputs", max_inputs)
    try:
        x = np.asarray(inputs)
        if x.dtype == object:  # integers beyond 64 bits: numbers all the same
            x = np.asarray(inputs, dtype=np.float64)
    except (ValueError, TypeError, OverflowError, RecursionError):  # ragged, or not numbers
        raise RequestError(422, "inputs: every input must have the same shape "
                                f"{tuple(input_shape)} (or {int(np.prod(input_shape))} flat values)") from None
    if x.dtype.kind not in "iuf":
        raise RequestError(422, "inputs: every value must be a number")
    if x.ndim < 2:
        raise RequestError(422, 'inputs: expected a list of inputs, e.g. {"inputs": [[0.0, 0.5, ...]]}')
    try:
        # float32 before the check: Preprocess reads uint8 as raw pixels and floats as model-scale values
        with np.errstate(over="ignore"):  # beyond float32's range is inf, refused just below
            x = check_inputs(x.astype(np.float32, copy=False), input_shape, "inputs")
    except PtflowError as exc:
        raise RequestError(422, str(exc)) from None
    if value_range is not None:
        low, high = float(x.min()), float(x.max())
        if low < value_range[0] or high > value_range[1]:
            raise RequestError(422, f"inputs: values must be within [{value_range[0]:g}, {value_range[1]:g}] "
                                    f"(pixels / 255) for this image model; got {low:g} to {high:g}")
    return x


def base64_images(images, max_inputs: int) -> list[tuple[str, bytes]]:
    """{"images": [...]} -> [(name, encoded bytes)], or a 4xx."""
    _check_count(images, "images", max_inputs)
    out = []
    for i, text in enumerate(images):
        name = f"images[{i}]"
        if not isinstance(text, str):
            raise RequestError(422, f"{name}: expected a base64 string")
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            out.append((name, base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{name}: not valid base64") from None
    return out


def multipart_files(body: bytes, content_type: str, max_inputs: int) -> Parsed:
    """A multipart/form-data body -> Parsed(images=[(file name, bytes)]): 1..max_inputs `files` parts.

    Every part must be a file in the `files` field, as the schema says: another field is refused,
    not ignored, as unknown JSON fields are.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise RequestError(400, "multipart/form-data without a boundary")
    parts: list[dict] = []
    header: dict = {}

    def on_part_begin():
        if len(parts) >= max_inputs:
            raise RequestError(422, f"more than {max_inputs} files in one request")
        parts.append({"headers": {}, "data": []})

    def on_header_field(data, start, end):
        header["name"] = header.get("name", b"") + data[start:end]

    def on_header_value(data, start, end):
        header["value"] = header.get("value", b"") + data[start:end]

    def on_header_end():
        parts[-1]["headers"][header.pop("name", b"").lower()] = header.pop("value", b"")

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_part_data": lambda data, start, end: parts[-1]["data"].append(data[start:end])}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except RequestError:
        raise
    except Exception as exc:  # python-multipart's own errors: MultipartParseError, FormParserError, ValueError
        raise RequestError(400, f"malformed multipart/form-data body ({type(exc).__name__})") from None
    files = []
    for part in parts:
        disposition = parse_options_header(part["headers"].get(b"content-disposition"))[1]
        field = disposition.get(b"name", b"").decode("utf-8", "replace")
        if field != "files" or b"filename" not in disposition:
            raise RequestError(422, f"unexpected form field {shown(field)}: send each image as a file in the "
                                    "'files' field (curl -F files=@digit.png)")
        name = disposition[b"filename"] or b"file"
        files.append((name.decode("utf-8", "replace")[:200], b"".join(part["data"])))
    if not files:
        raise RequestError(422, "no image files in the upload (send multipart/form-data with file fields)")
    return Parsed(images=files)
