"""The one place where errors become ``Problem``s, and the native format they are rendered in.

``problem_of`` maps every exception (domain errors, validation, auth, HTTP, Redis, the unexpected) to a
status, code, message and details. Native routes answer ``{"error": {"code", "message", "details"}}``;
each compatibility protocol renders the same ``Problem`` in its own format (``service.protocols``).
"""

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import CapacityExceeded, Conflict, InsufficientStorage, InvalidInput, LstmServeError, NotFound, Unavailable

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[LstmServeError], int]] = [
    (NotFound, 404),
    (InvalidInput, 422),
    (Conflict, 409),
    (CapacityExceeded, 429),
    (Unavailable, 503),
    (InsufficientStorage, 507),
]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

#: FastAPI's ``HTTPException(400)`` detail when a JSON body cannot be decoded at all.
_UNPARSEABLE_BODY = "There was an error parsing the body"


class Unauthorized(Exception):
    """A state-changing route was called without the right bearer token."""


def status_for(exc: LstmServeError) -> int:
    """HTTP status of a domain error."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


@dataclass(frozen=True)
class Problem:
    """An error as every protocol needs it: HTTP status, machine-readable code, a sentence, ``details``.

    Each protocol renders it in its own format: the native JSON here (``native_response``), TF Serving and
    KServe V2 in their packages under ``service.protocols``, gRPC as a status code.
    """

    status: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def native_body(problem: Problem) -> dict[str, Any]:
    """The native error body: ``{"error": {"code", "message", "details"}}`` (HTTP and WebSocket messages)."""
    return {"error": {"code": problem.code, "message": problem.message, "details": problem.details}}


def native_response(problem: Problem) -> JSONResponse:
    """The native error body as an HTTP response with the problem's status."""
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return JSONResponse(native_body(problem), status_code=problem.status, headers=headers)


def _shorten(value: Any) -> Any:
    """Echo what was sent, but never a whole large payload back."""
    if isinstance(value, (list, dict)) and len(value) > 8:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, (bytes, bytearray)):
        # A body that was not JSON (e.g. text/plain) is echoed as text; JSON cannot carry bytes.
        value = bytes(value[:201]).decode("utf-8", errors="replace")
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "…"
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return str(value)
    return value


#: How pydantic names the members of the schemas' number-or-list unions (``Step``, ``Target``) in an error's
#: location: not a field the client sent, so left out of the field name.
_UNION_MEMBERS = frozenset({"constrained-float", "list[constrained-float]"})


def _field_name(loc: tuple[int | str, ...]) -> str:
    parts = list(loc[1:] if loc and loc[0] in ("body", "path", "query", "form") else loc)
    name = ""
    for part in parts:
        if part in _UNION_MEMBERS:
            continue
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or str(loc[0] if loc else "body")


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    """``{field, expected, got}`` of one validation error."""
    if error.get("type") == "json_invalid":
        # loc is ("body", <character position>): name the body, and say where and why it is not JSON.
        reason = error.get("ctx", {}).get("error", "decode error")
        return {"field": "body", "expected": f"valid JSON ({reason} at character {error['loc'][-1]})", "got": "malformed JSON"}
    expected = error.get("msg", "")
    if isinstance(error.get("input"), (bytes, bytearray)):
        # The body was not parsed as JSON because its Content-Type is not JSON (text/plain, a form, ...).
        expected = "a JSON body sent with 'Content-Type: application/json'"
    return {"field": _field_name(tuple(error.get("loc", ()))), "expected": expected, "got": _shorten(error.get("input"))}


def validation_details(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """``{field, expected, got}`` of the first problem, then every problem in ``errors`` (one per field: a
    value that fits no member of a number-or-list union is one problem, told as its first member's)."""
    by_field: dict[str, dict[str, Any]] = {}
    for error in errors:
        problem = _problem(error)
        by_field.setdefault(problem["field"], problem)
    problems = list(by_field.values())
    return {**problems[0], "errors": problems[:20]} if problems else {}


def problem_of(exc: Exception, request: Request | None = None) -> Problem:
    """The one table from an exception to a ``Problem``; ``request`` names the path of an unmatched route."""
    if isinstance(exc, LstmServeError):
        return Problem(status_for(exc), exc.code, exc.message, {k: _shorten(v) for k, v in exc.details.items()})
    if isinstance(exc, RequestValidationError):
        details = validation_details(list(exc.errors()))
        message = f"Invalid request: {details.get('field', 'body')}: {details.get('expected', 'invalid value')}."
        return Problem(422, "validation_error", message, details)
    if isinstance(exc, Unauthorized):
        return Problem(401, "unauthorized", "Send 'Authorization: Bearer <API_KEY>' for this route.")
    if isinstance(exc, StarletteHTTPException):
        return _http_problem(exc, request)
    if isinstance(exc, RedisError):
        log.warning("Session store error: %s", exc)
        return Problem(503, "session_store_unavailable", "The session store (Redis) did not answer; retry shortly.")
    where = f" on {request.method} {request.url.path}" if request is not None else ""
    log.error("Unhandled error%s", where, exc_info=exc)
    return Problem(500, "internal_error", "An unexpected error occurred; it has been logged.")


def _http_problem(exc: StarletteHTTPException, request: Request | None) -> Problem:
    if exc.status_code == 400 and exc.detail == _UNPARSEABLE_BODY:
        # FastAPI's answer to a body that is not even text (e.g. not UTF-8): malformed JSON, so 422.
        problem = {"field": "body", "expected": "valid JSON in UTF-8", "got": "undecodable bytes"}
        return Problem(422, "validation_error", "Invalid request: body: not valid JSON.", {**problem, "errors": [problem]})
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if request is not None and exc.status_code in (404, 405) and exc.detail in ("Not Found", "Method Not Allowed"):
        # No route matched (e.g. a name holding '/', as an encoded '../x' does): say which request.
        message = f"No route {request.method} {request.url.path} ({str(exc.detail).lower()})."
        return Problem(exc.status_code, code, message, {"method": request.method, "path": request.url.path})
    return Problem(exc.status_code, code, str(exc.detail))


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of the native routes in the native format (protocol routes render their own)."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return native_response(problem_of(exc, request))

    for family in (LstmServeError, RequestValidationError, Unauthorized, StarletteHTTPException, RedisError, Exception):
        app.add_exception_handler(family, handle)
