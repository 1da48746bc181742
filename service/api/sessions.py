"""Sessions: stream a sequence step by step through a per-session LSTM state."""

from datetime import UTC, datetime
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, Response

from models.serving.session_service import SessionService
from models.serving.session_service import SessionState as DomainState
from models.serving.session_store import SessionRecord
from service.deps import MetricsDep, ModelName, SessionsDep
from service.metrics import Metrics
from service.schemas import (
    SESSION_STATE_FORMAT,
    ErrorResponse,
    OutputsStepResponse,
    SessionCreate,
    SessionPublic,
    SessionState,
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
    """Start a session pinned to a model version: at the zero state, a live session's state ("fork_of") or a snapshot ("state")."""
    body = body or SessionCreate()
    if body.fork_of is not None:
        record = await sessions.fork(name, body.fork_of, body.ttl_s)
    elif body.state is not None:
        record = await sessions.restore(name, _domain_state(body.state), body.ttl_s)
    else:
        record = await sessions.create(name, body.ttl_s, body.version)
    return session_public(record)


def _domain_state(snapshot: SessionState) -> DomainState:
    return DomainState(
        snapshot.model, snapshot.incarnation, snapshot.version, snapshot.steps_seen,
        np.asarray(snapshot.h, np.float32), np.asarray(snapshot.c, np.float32),
    )


@router.get("/sessions/{session_id}/state")
async def get_session_state(session_id: str, sessions: SessionsDep) -> SessionState:
    """The session's model incarnation, version, steps_seen and LSTM state (h, c): restore it with POST /models/{name}/sessions."""
    state = await sessions.state(session_id)
    return SessionState(
        format=SESSION_STATE_FORMAT, model=state.model, incarnation=state.incarnation, version=state.version,
        steps_seen=state.steps_seen, h=state.h.tolist(), c=state.c.tolist(),
    )


async def answer_step(
    sessions: SessionService, metrics: Metrics, session_id: str, body: StepRequest
) -> StepResponse | OutputsStepResponse:
    """The answer to a step request, for the route and the fast path alike (so they cannot differ)."""
    stepped = await sessions.step(session_id, body.values, body.seq)
    if not stepped.replayed:
        metrics.count_steps(stepped.record.model, len(stepped.probabilities))
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
