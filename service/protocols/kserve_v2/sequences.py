"""Triton's sequence extension on lstm-serve sessions.

A Triton sequence of a model is the lstm-serve session whose id is derived from the model's name and the
client's ``sequence_id`` (``session_id_for``). The session lives in the configured session store like any
other, so every replica sharing that store derives the same id and continues the sequence; it expires after
``SESSION_TTL_S`` idle seconds like any other (Triton's ``max_sequence_idle_microseconds``). Because the id
is derived, the store needs no second mapping from sequence to session, and ``GET /sessions/{id}`` shows the
sequence like any session.

- ``sequence_start``: start the sequence at the zero state (a running sequence with the same id starts over);
- every request steps it with the request's values, answering the probability after each value;
- ``sequence_end``: after answering, the sequence (its session) is closed;
- a request for a sequence that is not running, without ``sequence_start``, is refused as Triton refuses it.
"""

import hashlib
from contextlib import suppress

import numpy as np

from models.errors import InvalidInput, SessionNotFound
from models.serving.session_service import SessionService
from models.serving.session_store import SessionRecord
from service.protocols.kserve_v2.codec import SequenceControl


def session_id_for(model: str, sequence_id: int | str) -> str:
    """The session id of a model's Triton sequence: integer 7 and string "7" are different sequences, as in Triton."""
    kind = "int" if isinstance(sequence_id, int) else "str"
    digest = hashlib.sha256(f"{model}\0{kind}\0{sequence_id}".encode()).hexdigest()
    return f"seq-{digest[:40]}"


class TritonSequences:
    """Steps Triton sequences through the ``SessionService``."""

    def __init__(self, sessions: SessionService) -> None:
        self.sessions = sessions

    async def step(
        self, model: str, version: int | None, control: SequenceControl, values: np.ndarray
    ) -> tuple[SessionRecord, np.ndarray]:
        """Feed ``values`` to the sequence (starting or ending it as flagged); the probability after each value."""
        session_id = session_id_for(model, control.sequence_id)
        if control.start:
            with suppress(SessionNotFound):
                await self.sessions.delete(session_id)
            await self.sessions.create(model, version=version, session_id=session_id)
        try:
            stepped = await self.sessions.step(session_id, values)
        except SessionNotFound:
            raise InvalidInput(
                f"inference request for sequence {control.sequence_id} to model '{model}' must specify the START "
                "flag on the first request of the sequence",
                field="parameters.sequence_start",
                expected=True,
                got=False,
            ) from None
        if control.end:
            with suppress(SessionNotFound):
                await self.sessions.delete(session_id)
        return stepped.record, stepped.probabilities
