"""Sessions: stream a sequence step by step through a per-session LSTM state."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Response

from models.serving.session_service import SessionService
from models.serving.session_store import SessionRecord
from service.deps import MetricsDep, ModelName, SessionsDep
from service.metrics import Metrics
from service.schemas import (
    ErrorResponse,
    OutputsStepResponse,
    SessionCreate,
    SessionPublic,
    StepRequest,
    StepResponse,
    step_response,
)

router = APIRouter(
    tags=["sessions"],
    responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)


def session_public(record: SessionRecord) -> SessionPublic:
    """The public view of a session record."""
    return SessionPublic(
        session_id=record.session_id,
        model=record.model,
        version=record.version,
        steps_seen=record.steps_seen,
        ttl_s=record.ttl_s,
        expires_at=datetime.fromtimestamp(record.expires_at, UTC).isoformat(timespec="milliseconds"),
    )


@router.post(
    "/models/{name}/sessions",
    status_code=201,
    responses={409: {"model": ErrorResponse}, 429: {"model": ErrorResponse}},
)
async def create_session(
    name: ModelName, sessions: SessionsDep, body: Annotated[SessionCreate | None, Body()] = None
) -> SessionPublic:
    """Start a session at the zero state, pinned to the model's current version."""
    body = body or SessionCreate()
    return session_public(await sessions.create(name, body.ttl_s, body.version))


async def answer_step(
    sessions: SessionService, metrics: Metrics, session_id: str, body: StepRequest
) -> StepResponse | OutputsStepResponse:
    """The answer to a step request, for the route and the fast path alike (so they cannot differ)."""
    stepped = await sessions.step(session_id, body.values, body.seq)
    if not stepped.replayed:
        metrics.steps.labels(stepped.record.model).inc(len(stepped.probabilities))
    return step_response(session_id, stepped.record.steps_seen, stepped.task, stepped.probabilities)


@router.post("/sessions/{session_id}/step", responses={409: {"model": ErrorResponse}})
async def step_session(
    session_id: str, body: StepRequest, sessions: SessionsDep, metrics: MetricsDep
) -> StepResponse | OutputsStepResponse:
    """Feed one or more timesteps in order; returns the prediction after each. Send "seq" to retry safely."""
    return await answer_step(sessions, metrics, session_id, body)


@router.post("/sessions/{session_id}/reset", responses={409: {"model": ErrorResponse}})
async def reset_session(session_id: str, sessions: SessionsDep) -> SessionPublic:
    """Set the state back to zeros and steps_seen to 0."""
    return session_public(await sessions.reset(session_id))


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, sessions: SessionsDep) -> SessionPublic:
    """The session's model, version, progress and expiry."""
    return session_public(await sessions.get(session_id))


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(session_id: str, sessions: SessionsDep) -> Response:
    """End the session."""
    await sessions.delete(session_id)
    return Response(status_code=204)
