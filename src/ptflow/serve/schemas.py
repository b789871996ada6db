"""The service's wire format for the OpenAPI schema: request and response bodies, and every error answer.

These pydantic models describe the bodies; they do not parse them (payloads.py does, faster).
Every error is `{"detail": "..."}`, and every status an endpoint can answer is listed here, so the
schema is a contract a client (or a fuzzer) can check every answer against.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ptflow.data.image_files import FORMAT_NAMES


class PredictRequest(BaseModel):
    """Either `inputs` or `images`, not both."""

    inputs: list[list[float] | list[list[float]]] | None = Field(
        None, description="Inputs, each a flat vector or a 2-D array in the model's input shape. Image models "
                          "take values in [0, 1] (pixels / 255); tabular models take raw feature values.")
    images: list[str] | None = Field(None, description=f"Base64 images ({FORMAT_NAMES}; a data: URL prefix is "
                                                        "allowed), preprocessed exactly as `ptflow predict` does.")


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

JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": PredictRequest.model_json_schema()}}}}
MULTIPART_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}
