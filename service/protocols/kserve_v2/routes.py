"""KServe V2 over HTTP (``/v2/...``), so existing V2 clients (``tritonclient.http``, the kserve SDK) work at
their defaults: JSON bodies with any Content-Type or none, and the binary tensor data extension.

Each lstm-serve model has one input tensor (``sequence``: FP32 ``[-1, max_len, 1]`` or INT32 ``[-1, max_len]``)
and one output (``probability``: FP32 ``[-1, 1]``).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from service.deps import ModelName, V2Dep
from service.protocols.common import Version
from service.protocols.kserve_v2.codec import HEADER_LENGTH, call_from_http, http_response, split_binary
from service.protocols.kserve_v2.errors import render_error
from service.protocols.kserve_v2.schemas import (
    V2Error,
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
)
from service.protocols.routing import ProtocolRoute, json_request

#: Where ``V2Route`` leaves the binary section of a request (the bytes after the JSON part).
_BINARY_SECTION = "lstm_serve.v2_binary"


class V2Route(ProtocolRoute):
    """Routes of the V2 HTTP API: the binary section split off the JSON part, errors in the V2 format."""

    render_error = staticmethod(render_error)

    async def prepare(self, request: Request) -> Request:
        if self.body_field is None:
            return request
        header, binary = split_binary(await request.body(), request.headers.get(HEADER_LENGTH))
        prepared = json_request(request, header)
        prepared.scope[_BINARY_SECTION] = binary
        return prepared


async def binary_section(request: Request) -> bytes:
    """The request's binary tensor data (empty without the extension)."""
    return request.scope.get(_BINARY_SECTION, b"")


BinarySection = Annotated[bytes, Depends(binary_section)]

#: Every V2 route may answer these, in the V2 error format (401 with API_KEY_ALL, 413 past MAX_BODY_BYTES; 409,
#: 429 and 503 from Triton sequences: a bidirectional model, MAX_SESSIONS, the session store).
_ERRORS = {status: {"model": V2Error} for status in (400, 401, 404, 409, 413, 429, 503)}
_INFER = {
    "response_model": V2InferResponse,
    "response_model_exclude_none": True,
    "responses": {200: {"content": {"application/octet-stream": {}}, "description": (
        "JSON, or with binary outputs requested the JSON part then the raw FP32 values; the JSON part's length "
        "is in the Inference-Header-Content-Length header"
    )}},
}

#: Probes stay open like ``/health/*``; the app registers this router without the read-access check.
health_router = APIRouter(prefix="/v2/health", tags=["kserve-v2"], route_class=V2Route)
router = APIRouter(prefix="/v2", tags=["kserve-v2"], route_class=V2Route, responses=_ERRORS)


@health_router.get("/live")
async def server_live() -> V2Live:
    """The server is up."""
    return V2Live(live=True)


@health_router.get("/ready", responses={503: {"model": V2Ready}})
async def server_ready(plane: V2Dep, response: Response) -> V2Ready:
    """Ready once each model's latest version is loaded (503 until then)."""
    if not plane.ready:
        response.status_code = 503
    return V2Ready(ready=plane.ready)


@router.get("")
async def server_metadata(plane: V2Dep) -> V2ServerMetadata:
    """Server name, version and the extensions it supports (binary tensor data, sequences)."""
    return plane.server_metadata()


@router.get("/models/{name}")
async def model_metadata(name: ModelName, plane: V2Dep) -> V2ModelMetadata:
    """Versions, platform and input/output tensors of the latest version."""
    return plane.model_metadata(name, None)


@router.get("/models/{name}/versions/{version}")
async def version_metadata(name: ModelName, version: Version, plane: V2Dep) -> V2ModelMetadata:
    """Metadata of one version."""
    return plane.model_metadata(name, version)


async def _ready(plane: V2Dep, name: str, version: int | None, response: Response) -> V2ModelReady:
    ready = await plane.model_ready(name, version)
    if not ready:
        response.status_code = 503
    return V2ModelReady(name=name, ready=ready)


@router.get("/models/{name}/ready", responses={503: {"model": V2ModelReady}})
async def model_ready(name: ModelName, plane: V2Dep, response: Response) -> V2ModelReady:
    """Whether the latest version is loaded and can answer."""
    return await _ready(plane, name, None, response)


@router.get("/models/{name}/versions/{version}/ready", responses={503: {"model": V2ModelReady}})
async def version_ready(name: ModelName, version: Version, plane: V2Dep, response: Response) -> V2ModelReady:
    """Whether one version is loaded and can answer."""
    return await _ready(plane, name, version, response)


@router.post("/models/{name}/infer", **_INFER)
async def infer(name: ModelName, body: V2InferRequest, binary: BinarySection, plane: V2Dep) -> Response:
    """Probabilities with the latest version as one FP32 ``[n, 1]`` output; in a Triton sequence, one per value."""
    return http_response(await plane.infer(call_from_http(name, None, body, binary)))


@router.post("/models/{name}/versions/{version}/infer", **_INFER)
async def infer_version(
    name: ModelName, version: Version, body: V2InferRequest, binary: BinarySection, plane: V2Dep
) -> Response:
    """Probabilities with one version of a model."""
    return http_response(await plane.infer(call_from_http(name, version, body, binary)))
