"""WebSocket streams: step one session value by value over one connection instead of one request per step.

Each message the client sends is a step body (``StepRequest``: ``{"values": [...], "seq": n}``) and is
answered by one message, in order: the step response (``StepResponse``) or the native error body. Both go
through ``answer_step``, the function behind ``POST /sessions/{id}/step`` and its fast path, so a stream
steps exactly as HTTP does (same validation, ``seq`` meaning, locks, batching with every other step and
store). Errors that leave the session usable (a bad message, ``step_out_of_order``, ``session_busy``,
``state_store_unavailable``...) are answered and the stream goes on; errors that end it (the session or its
model gone, auth, an open that failed) are answered, then the connection is closed with ``4000 + the HTTP
status`` of the error (4401, 4404, 4409, 4429, 4503) and the error's code as reason.

Backpressure: at most ``STREAM_MAX_PENDING`` messages per connection are read and not yet answered. At the
bound the server stops reading; uvicorn then pauses reading the socket, so a client that sends without
reading fills its own TCP buffers, never the server's memory.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.types import Message

from models.serving.session_service import SessionService
from models.serving.session_store import SessionRecord
from service.api.sessions import answer_step, session_public
from service.auth import STREAM_SUBPROTOCOL, authorization_of, bearer_matches
from service.deps import MetricsDep, ModelName, SessionsDep, SettingsDep
from service.config import Settings
from service.errors import Problem, Unauthorized, native_body, problem_of
from service.metrics import Metrics
from service.schemas import StepRequest

router = APIRouter(tags=["sessions"])

#: Close code of an error that ends a stream: 4000 + its HTTP status (4404 session or model gone, 4401...).
CLOSE_CODE_BASE = 4000
#: An unexpected server error (RFC 6455 "internal error").
CLOSE_INTERNAL_ERROR = 1011
#: Exceptions a send to a client that went away raises (Starlette's, uvicorn's ``ClientDisconnected``).
_GONE = (WebSocketDisconnect, OSError, RuntimeError)


@router.websocket("/sessions/{session_id}/stream")
async def stream_session(
    websocket: WebSocket, session_id: str, sessions: SessionsDep, metrics: MetricsDep, settings: SettingsDep
) -> None:
    """Step an existing session over a WebSocket; the first message is the session (as ``GET /sessions/{id}``)."""
    await _serve(websocket, settings, sessions, metrics, lambda: sessions.get(session_id))


@router.websocket("/models/{name}/stream")
async def stream_new_session(
    websocket: WebSocket,
    name: ModelName,
    sessions: SessionsDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    ttl_s: Annotated[int | None, Query(ge=1, le=7 * 24 * 3600)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> None:
    """Start a session (as ``POST /models/{name}/sessions``) and step it; the first message is the new session."""
    await _serve(websocket, settings, sessions, metrics, lambda: sessions.create(name, ttl_s, version))


async def _serve(
    websocket: WebSocket,
    settings: Settings,
    sessions: SessionService,
    metrics: Metrics,
    open_session: Callable[[], Awaitable[SessionRecord]],
) -> None:
    offered = list(websocket.scope.get("subprotocols", []))
    # Accepted before the checks, so that a refusal can say why (an error message and a close code); a
    # handshake refused outright reaches a browser as a bare failure.
    await websocket.accept(subprotocol=STREAM_SUBPROTOCOL if STREAM_SUBPROTOCOL in offered else None)
    # The session routes' rule (service.deps.require_read_access), with the browser's way to send the key.
    if settings.api_key and settings.api_key_all:
        if not bearer_matches(authorization_of(websocket.headers.get("authorization", ""), offered), settings.api_key):
            await _end(websocket, problem_of(Unauthorized()))
            return
    try:
        record = await open_session()
    except Exception as exc:  # noqa: BLE001 - answered and closed (problem_of logs the unexpected)
        await _end(websocket, problem_of(exc))
        return
    try:
        await websocket.send_text(session_public(record).model_dump_json())
    except _GONE:
        return
    await StreamSteps(websocket, sessions, metrics, record.session_id, settings.stream_max_pending).run()


class StreamSteps:
    """The messages of one open stream: a reader bounded by ``max_pending`` unanswered messages, and an
    answerer that steps them one after the other (they are steps of one session: they could not overlap)."""

    def __init__(
        self, websocket: WebSocket, sessions: SessionService, metrics: Metrics, session_id: str, max_pending: int
    ) -> None:
        self.websocket = websocket
        self.sessions = sessions
        self.metrics = metrics
        self.session_id = session_id
        self.slots = asyncio.Semaphore(max_pending)
        self.inbox: asyncio.Queue[StepRequest | Problem | None] = asyncio.Queue()
        self.client_gone = False

    async def run(self) -> None:
        """Answer messages until the client leaves or a fatal error closes the stream."""
        reader = asyncio.ensure_future(self._read())
        # However the reader ends (the client left, or an error), the answerer stops after what it has.
        reader.add_done_callback(lambda _: self.inbox.put_nowait(None))
        try:
            await self._answer()
        finally:
            reader.cancel()

    async def _read(self) -> None:
        while True:
            await self.slots.acquire()  # released when a message is answered
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                # Messages read but not yet started are dropped, not applied: nobody would get their answer.
                self.client_gone = True
                return
            self.inbox.put_nowait(_parse(message))

    async def _answer(self) -> None:
        while (item := await self.inbox.get()) is not None and not self.client_gone:
            problem = item if isinstance(item, Problem) else None
            if isinstance(item, StepRequest):
                try:
                    answer = await answer_step(self.sessions, self.metrics, self.session_id, item)
                except Exception as exc:  # noqa: BLE001 - every error is answered (problem_of logs the unexpected)
                    problem = problem_of(exc)
            try:
                if problem is None:
                    await self.websocket.send_text(answer.model_dump_json())
                elif _ends_stream(problem):
                    await _end(self.websocket, problem)
                    return
                else:
                    await self.websocket.send_json(native_body(problem))
            except _GONE:
                return
            self.slots.release()


def _parse(message: Message) -> StepRequest | Problem:
    """A received message as a step body, or the problem with it (answered in its turn; the stream goes on)."""
    data = message.get("text")
    if data is None:
        data = message.get("bytes") or b""
    try:
        return StepRequest.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(error["type"] == "json_invalid" for error in errors):
            problem = {"field": "message", "expected": 'a JSON object {"values": [...], "seq": n}', "got": "malformed JSON"}
            return Problem(422, "validation_error", "Invalid message: not a JSON object.", {**problem, "errors": [problem]})
        return problem_of(RequestValidationError(errors))


def _ends_stream(problem: Problem) -> bool:
    """The session cannot go on (deleted, expired, its model deleted) or the server failed: close the stream."""
    return problem.status == 404 or problem.code == "internal_error"


async def _end(websocket: WebSocket, problem: Problem) -> None:
    """Answer ``problem``, then close with its close code (4000 + its status; 1011 for an internal error)."""
    code = CLOSE_INTERNAL_ERROR if problem.code == "internal_error" else CLOSE_CODE_BASE + problem.status
    try:
        await websocket.send_json(native_body(problem))
        await websocket.close(code, reason=problem.code)
    except _GONE:
        pass

