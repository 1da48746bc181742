"""KServe V2's error format over HTTP (``{"error": "<message>"}``, 400 for an invalid argument) and gRPC
(a status code and the message)."""

import grpc
from fastapi.responses import JSONResponse

from service.errors import Problem

_GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def render_error(problem: Problem) -> JSONResponse:
    """A ``Problem`` as a V2 server answers it over HTTP."""
    return JSONResponse({"error": problem.message}, status_code=400 if problem.status == 422 else problem.status)


def grpc_status(problem: Problem) -> grpc.StatusCode:
    """The gRPC status code of a ``Problem`` (the one place gRPC errors are mapped)."""
    return _GRPC_CODES.get(problem.status, grpc.StatusCode.INTERNAL)
