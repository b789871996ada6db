"""The service's wire format: request and response schemas, and request bodies -> model inputs.

Every way a request body can be wrong ends here as an HTTPException with a status and a message
that names the problem; nothing a client sends reaches the model unchecked. JSON bodies are parsed
by hand (orjson, then numpy) rather than by pydantic: it is the hot path, and a 784-value input
validated field by field costs more than the forward pass. The pydantic models below describe
the same bodies for the OpenAPI schema.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import orjson
from fastapi import HTTPException
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ptflow.data.imaging import ImageTooLarge, load_image_input
from ptflow.data.inputs import check_inputs
from ptflow.errors import PtflowError


class PredictRequest(BaseModel):
    """Either `inputs` or `images`, not both."""

    inputs: list[list[float] | list[list[float]]] | None = Field(
        None, description="Inputs, each a flat vector or a 2-D array in the model's input shape. Image models "
                          "take values in [0, 1] (pixels / 255); tabular models take raw feature values.")
    images: list[str] | None = Field(None, description="Base64 PNG/JPEG/... images (a data: URL prefix is allowed), "
                                                        "preprocessed exactly as `ptflow predict` does.")


class Prediction(BaseModel):
    input: str = Field(description="which input: inputs[i], images[i] or the uploaded file's name")
    label: int = Field(description="index of the most probable class")
    class_: str = Field(alias="class", description="name of the most probable class")
    probabilities: dict[str, float] = Field(description="probability of every class, by class name")


class PredictResponse(BaseModel):
    model_id: str = Field(description="sha256 of the model file that answered")
    predictions: list[Prediction]


class ModelInfo(BaseModel):
    id: str
    name: str
    architecture: str
    dataset: str | None
    classes: list[str]
    input_shape: list[int]
    input_range: list[float] | None = Field(description="allowed values of JSON inputs; null: any finite value")
    image_style: str | None
    preprocessing: dict
    metrics: dict
    sha256: str
    max_inputs: int
    auth_required: bool


ERRORS = {  # documented error answers, all {"detail": "..."}
    400: {"description": "malformed JSON, base64 or image"},
    401: {"description": "missing or wrong API key"},
    413: {"description": "body or image too large"},
    415: {"description": "wrong Content-Type"},
    422: {"description": "wrong shape, too many inputs, NaN/inf or out-of-range values"},
    503: {"description": "model not ready or queue full (see Retry-After)"},
}

JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": PredictRequest.model_json_schema()}}}}
MULTIPART_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


def require_media_type(content_type: str | None, expected: str) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != expected:
        raise HTTPException(415, f"expected Content-Type {expected}, got {media_type or 'none'}")


def parse_json(body: bytes) -> dict:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # the standard parser accepts NaN and Infinity, so the value check can name them
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise HTTPException(400, "the request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise HTTPException(422, 'expected a JSON object: {"inputs": [...]} or {"images": [...]}')
    unknown = set(payload) - {"inputs", "images"}
    if unknown:
        raise HTTPException(422, f"unknown field(s) {', '.join(sorted(unknown))}: expected \"inputs\" or \"images\"")
    if ("inputs" in payload) == ("images" in payload):
        raise HTTPException(422, 'send exactly one of "inputs" and "images"')
    return payload


def _check_count(items, field: str, max_inputs: int) -> None:
    if not isinstance(items, list) or not items:
        raise HTTPException(422, f'"{field}" must be a non-empty list')
    if len(items) > max_inputs:
        raise HTTPException(422, f'{len(items)} {field} in one request; at most {max_inputs} are allowed')


def json_inputs(inputs, input_shape: tuple[int, ...], max_inputs: int,
                value_range: tuple[float, float] | None) -> np.ndarray:
    """{"inputs": [...]} -> float32 (N, *input_shape), or a 422 naming the problem."""
    _check_count(inputs, "inputs", max_inputs)
    try:
        x = np.asarray(inputs)
    except (ValueError, TypeError):  # ragged lists
        raise HTTPException(422, "inputs: every input must have the same shape "
                                 f"{tuple(input_shape)} (or {int(np.prod(input_shape))} flat values)") from None
    if x.dtype.kind not in "iuf":
        raise HTTPException(422, "inputs: every value must be a number")
    if x.ndim < 2:
        raise HTTPException(422, 'inputs: expected a list of inputs, e.g. {"inputs": [[0.0, 0.5, ...]]}')
    try:
        # float32 before the check: Preprocess reads uint8 as raw pixels and floats as model-scale values
        x = check_inputs(x.astype(np.float32, copy=False), input_shape, "inputs")
    except PtflowError as exc:
        raise HTTPException(422, str(exc)) from None
    if value_range is not None:
        low, high = float(x.min()), float(x.max())
        if low < value_range[0] or high > value_range[1]:
            raise HTTPException(422, f"inputs: values must be within [{value_range[0]:g}, {value_range[1]:g}] "
                                     f"(pixels / 255) for this image model; got {low:g} to {high:g}")
    return x


def base64_images(images, max_inputs: int) -> list[tuple[str, bytes]]:
    """{"images": [...]} -> [(name, encoded bytes)], or a 4xx."""
    _check_count(images, "images", max_inputs)
    out = []
    for i, text in enumerate(images):
        name = f"images[{i}]"
        if not isinstance(text, str):
            raise HTTPException(422, f"{name}: expected a base64 string")
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            out.append((name, base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"{name}: not valid base64") from None
    return out


async def form_files(request, max_inputs: int) -> list[tuple[str, bytes]]:
    """A multipart upload -> [(file name, bytes)], or a 4xx."""
    try:
        async with request.form(max_files=max_inputs, max_fields=max_inputs) as form:
            files = [(f.filename or key, await f.read()) for key, f in form.multi_items() if hasattr(f, "read")]
    except StarletteHTTPException as exc:  # starlette reports its own multipart limits as 400
        if "Too many" in str(exc.detail):
            raise HTTPException(422, f"more than {max_inputs} files in one request") from None
        raise
    if not files:
        raise HTTPException(422, "no image files in the upload (send multipart/form-data with file fields)")
    return files


def decode_images(images: list[tuple[str, bytes]], input_shape: tuple[int, ...], style: str,
                  max_pixels: int) -> np.ndarray:
    """Encoded images -> uint8 (N, *input_shape) through `ptflow predict`'s own preprocessing."""
    if len(input_shape) != 3:
        raise HTTPException(422, f"this model takes {tuple(input_shape)} feature vectors, not images")
    return np.stack([_decode(data, name, input_shape, style, max_pixels) for name, data in images])


def _decode(data: bytes, name: str, input_shape: tuple[int, ...], style: str, max_pixels: int) -> np.ndarray:
    try:  # open_image checks the size from the header: bombs are refused before decoding a pixel
        return load_image_input(data, input_shape, style, name, max_pixels)
    except ImageTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except PtflowError as exc:
        raise HTTPException(400, str(exc)) from None
    except (OSError, ValueError) as exc:  # a damaged image that got past the header
        raise HTTPException(400, f"{name}: not a readable image ({type(exc).__name__})") from None
