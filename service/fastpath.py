"""A lean path for the two hottest routes: ``POST /models/{name}/predict`` and ``/sessions/{id}/step``.

The model call takes microseconds; FastAPI's routing and dependency resolution took most of each
request's CPU time (bench/: about 4x the throughput without them). For a well-formed JSON body, this
ASGI middleware validates with the very same request schema, calls the very same data plane and
serializes the very same response model, without that machinery. Anything else (an invalid body, an
unknown model or session, a missing or chunked Content-Length, ``API_KEY_ALL``, any error) is handed,
body intact, to the normal route, which answers it exactly as it always does. The routes therefore stay
the single source of behaviour and of the OpenAPI docs; this path only answers what they would answer
with 200. A step that failed here changed nothing (a session's state is saved last), so handing it on
cannot apply it twice.
"""

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.schemas import NAME_PATTERN, PredictRequest, PredictResponse, StepRequest, StepResponse

log = logging.getLogger(__name__)

Answer = Callable[[Any, str, bytes], Awaitable[bytes]]


async def _predict(state: Any, name: str, body: bytes) -> bytes:
    request = PredictRequest.model_validate_json(body)
    servable, probabilities = await state.predictor.predict(name, request.sequences, request.version, request.truncate)
    state.metrics.predicted.labels(name).inc(len(probabilities))
    return PredictResponse.of(name, servable.meta.version, probabilities).model_dump_json().encode()


async def _step(state: Any, session_id: str, body: bytes) -> bytes:
    request = StepRequest.model_validate_json(body)
    record, probabilities = await state.sessions.step(session_id, request.values)
    state.metrics.steps.labels(record.model).inc(len(probabilities))
    return StepResponse.of(session_id, record.steps_seen, probabilities).model_dump_json().encode()


@dataclass(frozen=True)
class _FastRoute:
    pattern: re.Pattern[str]
    #: The route template, as the metrics middleware labels requests (``scope["route"].path``).
    path: str
    answer: Answer


_ROUTES = (
    _FastRoute(re.compile(r"^/models/(" + NAME_PATTERN.strip("^$") + r")/predict$"), "/models/{name}/predict", _predict),
    _FastRoute(re.compile(r"^/sessions/([A-Za-z0-9_-]{1,64})/step$"), "/sessions/{session_id}/step", _step),
)


class FastPath:
    """Answers valid predict and step requests directly; hands every other request on unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, match = _route(scope)
        length = _json_content_length(scope) if match else None
        settings = scope["app"].state.settings if match else None
        if length is None or length > settings.max_body_bytes or settings.api_key_all:
            await self.app(scope, receive, send)
            return
        body, complete = await _read(receive, length)
        answer = None
        if complete:
            try:
                answer = await route.answer(scope["app"].state, match.group(1), body)
            except Exception:  # noqa: BLE001 - the normal route answers every failure in the usual format
                log.debug("Fast path handing %s to the route", scope["path"], exc_info=True)
        if answer is None:
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = route
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


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
