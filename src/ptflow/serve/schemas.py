"""The service's wire format for the OpenAPI schema: request and response bodies, and every error answer.

These pydantic models describe the bodies; they do not parse them (payloads.py does, faster).
Every error is `{"detail": "..."}`, and every status an endpoint can answer is listed here, so the
schema is a contract a client (or a fuzzer) can check every answer against. The request bodies
state what payloads.py enforces: exactly one of `inputs` and `images`, 1 to --max_inputs of them,
and, once the model is loaded, each input's shape and value range; a request that fits the schema
is answered 200, unless an image's bytes (which no JSON schema can describe) are not a readable
image in an accepted format and size (400, 413, 415).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ptflow.data.image_files import FORMAT_NAMES


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
    crop_pct: float | None = Field(None, description="with image_style crop: the share of the image the centre "
                                                      "crop keeps (the evaluation transform)")
    interpolation: str | None = Field(None, description="with image_style crop: the filter the evaluation transform "
                                                           "resizes with, bilinear or bicubic")
    preprocessing: dict
    metrics: dict
    sha256: str
    max_inputs: int
    auth_required: bool


class Status(BaseModel):
    status: str


class Error(BaseModel):
    detail: str = Field(description="what was wrong, in one line")


def errors(*statuses: int) -> dict:
    """OpenAPI `responses` for these error statuses, each an `Error` body."""
    return {status: {"model": Error, "description": WHY[status]} for status in statuses}


WHY = {
    400: "malformed JSON, multipart, base64 or image",
    401: "missing or wrong API key",
    403: "Host header not allowed (no API key is set, and the name is not loopback or --allowed_hosts)",
    408: "the request did not arrive whole within --request_timeout_s",
    413: "body, image or the request's images together too large",
    415: f"wrong Content-Type, or an image format other than {FORMAT_NAMES}",
    422: "wrong shape, too many inputs, NaN/inf or out-of-range values",
    431: "request line and headers larger than --max_header_kb",
    500: "a bug: logged, never shown as a traceback",
    503: "model not ready, queue full, or too many connections (see Retry-After)",
}
ALWAYS = (403, 408, 413, 431, 503)  # any request can meet the Host check, the deadline, the body limit, a full server
PREDICT_ERRORS = errors(*ALWAYS, 400, 401, 415, 422, 500)
PLAIN_ERRORS = errors(*ALWAYS)

FLOAT32_MAX = 3.4028234663852886e38  # beyond it a value is inf once cast to float32, and refused


def json_body(max_inputs: int, input_shape: tuple[int, ...] | None = None,
              value_range: tuple[float, float] | None = None) -> dict:
    """POST /v1/predict's requestBody: {"inputs": [...]} or {"images": [...]}, each 1..max_inputs long.

    Without the model (still loading) an input is any list of numbers, or of lists of numbers.
    """
    if input_shape is None:
        forms = [{"type": "number"}, {"type": "array", "minItems": 1, "items": {"type": "number"}}]
    else:
        forms = _input_forms(tuple(input_shape), value_range)
    # every input of a request has the same form: they are stacked into one array
    inputs = {"anyOf": [{"type": "array", "minItems": 1, "maxItems": max_inputs, "items": form} for form in forms],
              "description": "Inputs, each in the model's input shape, or flat. Image models take values in "
                             "[0, 1] (pixels / 255); tabular models take raw feature values."}
    images = {"type": "array", "minItems": 1, "maxItems": max_inputs,
              "items": {"type": "string", "contentEncoding": "base64"},
              "description": f"Base64 images ({FORMAT_NAMES}; a data: URL prefix is allowed), preprocessed "
                             "exactly as `ptflow predict` does."}
    schema = {"oneOf": [
        {"type": "object", "properties": {"inputs": inputs}, "required": ["inputs"], "additionalProperties": False},
        {"type": "object", "properties": {"images": images}, "required": ["images"], "additionalProperties": False},
    ]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _input_forms(shape: tuple[int, ...], value_range: tuple[float, float] | None) -> list[dict]:
    """The shapes payloads.json_inputs takes for one input: nested as the model's, flat, and (H, W) for (1, H, W)."""
    low, high = value_range or (-FLOAT32_MAX, FLOAT32_MAX)
    number = {"type": "number", "minimum": low, "maximum": high}

    def nested(dims: tuple[int, ...]) -> dict:
        inner = number if len(dims) == 1 else nested(dims[1:])
        return {"type": "array", "minItems": dims[0], "maxItems": dims[0], "items": inner}

    size = 1
    for d in shape:
        size *= d
    forms = [nested(shape)]
    if len(shape) > 1:
        forms.append(nested((size,)))
    if len(shape) == 3 and shape[0] == 1:
        forms.append(nested(shape[1:]))
    return forms


def upload_body(max_inputs: int) -> dict:
    """POST /v1/predict/image's requestBody: 1..max_inputs files in the field `files`, and nothing else."""
    files = {"type": "array", "minItems": 1, "maxItems": max_inputs,
             "items": {"type": "string", "format": "binary"}, "description": f"image files ({FORMAT_NAMES})"}
    schema = {"type": "object", "required": ["files"], "properties": {"files": files}, "additionalProperties": False}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
