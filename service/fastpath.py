"""A lean entry for the two hottest routes: ``POST /models/{name}/predict`` and ``/sessions/{id}/step``.

The model call takes microseconds; FastAPI's routing and dependency resolution took most of each
request's CPU time (bench/: about 4x the throughput without them). This ASGI layer reads a JSON body,
validates it with the route's own request schema, and calls the route's own answer function
(``answer_predict``, ``answer_step``): one implementation of each behaviour, two entries. Any error raised
by the answer is rendered as the routes render it (``problem_of``, ``native_response``).

It sits in front of the whole middleware stack (``ServiceApp``), so what those layers do for every request
it does itself, once: it counts and times the request (``Metrics.observe_request``, as ``MetricsMiddleware``
does) and answers an unexpected error with the logged 500 (as the exception handlers do).

A request is handed to the normal route only *before* anything happened: when it is not eligible (a
missing or chunked Content-Length, not JSON, too large, ``API_KEY_ALL``), or its body does not validate
(the route then answers the 422 in FastAPI's exact format). Once an answer function has started, this path
answers whatever happens, so a step whose save was sent is never handed over and applied a second time.
"""

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.models import answer_predict
from service.api.sessions import answer_step
from service.errors import native_response, problem_of
from service.schemas import NAME_PATTERN, PredictRequest, StepRequest


@dataclass(frozen=True)
class _FastRoute:
    pattern: re.Pattern[str]
    #: The route template, as the metrics middleware labels requests (``scope["route"].path``).
    path: str
    schema: type[BaseModel]
    #: ``(app.state, path parameter, validated body) -> response model``: the route's answer function.
    answer: Callable[[Any, str, Any], Awaitable[BaseModel]]


_ROUTES = (
    _FastRoute(
        re.compile(r"^/models/(" + NAME_PATTERN.strip("^$") + r")/predict$"),
        "/models/{name}/predict",
        PredictRequest,
        lambda state, name, body: answer_predict(state.predictor, state.metrics, name, body),
    ),
    _FastRoute(
        re.compile(r"^/sessions/([A-Za-z0-9_-]{1,64})/step$"),
        "/sessions/{session_id}/step",
        StepRequest,
        lambda state, session_id, body: answer_step(state.sessions, state.metrics, session_id, body),
    ),
)


class FastPath:
    """Answers predict and step requests with valid bodies directly; hands every other request on unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        route, match = _route(scope)
        length = _json_content_length(scope) if match else None
        state = scope["app"].state if match else None
        if length is None or length > state.settings.max_body_bytes or state.settings.api_key_all:
            await self.app(scope, receive, send)
            return
        body, complete = await _read(receive, length)
        try:
            request = route.schema.model_validate_json(body) if complete else None
        except ValidationError:
            request = None
        if request is None:  # nothing has happened yet: the route answers it in its usual format
            await self.app(scope, _replay(body, receive), send)
            return
        status = 500  # what the request counts as if sending the answer fails (e.g. the client is gone)
        try:
            try:
                answer = (await route.answer(state, match.group(1), request)).model_dump_json().encode()
            except Exception as exc:  # noqa: BLE001 - rendered as every route renders it (a 500 is logged there)
                problem = problem_of(exc, Request(scope))
                status = problem.status
                await native_response(problem)(scope, receive, send)
                return
            status = 200
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
            await send({"type": "http.response.body", "body": answer})
        finally:
            state.metrics.observe_request("POST", route.path, status, time.perf_counter() - started)


def _route(scope: Scope) -> tuple[_FastRoute | None, re.Match[str] | None]:
    if scope["type"] == "http" and scope["method"] == "POST":
        for route in _ROUTES:
            if match := route.pattern.match(scope["path"]):
                return route, match
    return None, None


def _json_content_length(scope: Scope) -> int | None:
    """The declared body length of a JSON request, else ``None`` (the normal route handles it)."""
    length = None
    is_json = False
    for key, value in scope["headers"]:
        if key == b"content-length" and value.isdigit():
            length = int(value)
        elif key == b"content-type":
            is_json = value.split(b";")[0].strip().lower() == b"application/json"
    return length if is_json else None


async def _read(receive: Receive, length: int) -> tuple[bytes, bool]:
    """The body, and whether it arrived whole (a disconnect or a longer body than declared is not whole)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > length:
            return b"".join(chunks), False
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that first hands over the body already read, then defers to the real one."""
    pending = True

    async def receive_again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again
