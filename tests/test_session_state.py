"""Session state snapshots, forks and restores, against both session stores: a fork and its original fed the
same values answer the same probabilities; a restored snapshot continues where it was taken (on this app or
another deployment of the same model folder); a state of another model, incarnation or version is refused
with 409 naming what differs, a malformed one with 422."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import SMALL_PARAMS, train
from tests.test_sessions import random_sequence, served, start, step, store_settings  # noqa: F401 - fixtures

MODEL = "m-lstm"


def values_of(client: TestClient, seed: int) -> list[float]:
    return random_sequence(client.get(f"/models/{MODEL}").json(), seed)


def probabilities(client: TestClient, session_id: str, values: list[float]) -> list[float]:
    return [step(client, session_id, [v])["probability"] for v in values]


def snapshot(client: TestClient, session_id: str) -> dict[str, Any]:
    response = client.get(f"/sessions/{session_id}/state")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_new_session_snapshots_as_the_zero_state(served: TestClient) -> None:  # noqa: F811
    meta = served.get(f"/models/{MODEL}").json()
    state = snapshot(served, start(served, MODEL)["session_id"])
    units = meta["params"]["units"]
    assert state == {
        "format": "lstm-serve.session-state.v1", "model": MODEL, "incarnation": state["incarnation"],
        "version": meta["version"], "steps_seen": 0, "h": [[0.0] * units], "c": [[0.0] * units],
    }
    assert state["incarnation"]


def test_a_fork_and_its_original_answer_alike_and_apart(served: TestClient) -> None:  # noqa: F811
    values = values_of(served, seed=5)
    original = start(served, MODEL)["session_id"]
    probabilities(served, original, values[:10])
    response = served.post(f"/models/{MODEL}/sessions", json={"fork_of": original})
    assert response.status_code == 201, response.text
    fork = response.json()
    assert fork["steps_seen"] == 10 and fork["session_id"] != original
    assert snapshot(served, fork["session_id"]) == snapshot(served, original)

    on_fork = probabilities(served, fork["session_id"], values[10:])
    assert served.get(f"/sessions/{original}").json()["steps_seen"] == 10  # the original is untouched
    on_original = probabilities(served, original, values[10:])
    assert on_fork == on_original
    # A "what if": the fork takes another continuation; the original's next answer does not change.
    what_if = served.post(f"/models/{MODEL}/sessions", json={"fork_of": original}).json()["session_id"]
    probabilities(served, what_if, [5.0, -5.0])
    assert snapshot(served, what_if)["h"] != snapshot(served, original)["h"]


def test_a_restored_snapshot_continues_exactly_where_it_was_taken(
    served: TestClient, app_client: Callable[..., TestClient], trained_dir: Path  # noqa: F811
) -> None:
    values = values_of(served, seed=9)
    session_id = start(served, MODEL)["session_id"]
    probabilities(served, session_id, values[:12])
    saved = snapshot(served, session_id)
    expected = probabilities(served, session_id, values[12:])

    restored = served.post(f"/models/{MODEL}/sessions", json={"state": saved, "ttl_s": 60})
    assert restored.status_code == 201, restored.text
    assert restored.json()["steps_seen"] == 12 and restored.json()["ttl_s"] == 60
    np.testing.assert_allclose(probabilities(served, restored.json()["session_id"], values[12:]), expected, atol=1e-6)

    # Another deployment of the same model folder (its own in-process store) takes the snapshot too.
    elsewhere = app_client(trained_dir)
    moved = elsewhere.post(f"/models/{MODEL}/sessions", json={"state": saved}).json()["session_id"]
    np.testing.assert_allclose(probabilities(elsewhere, moved, values[12:]), expected, atol=1e-6)


def test_a_state_of_another_model_incarnation_or_version_is_409(
    app_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = app_client(tmp_path / "own")
    for name in ("a", "b"):
        train(client, name, architecture="lstm", dataset="noisy_trend", epochs=1, params=dict(SMALL_PARAMS))
    saved = snapshot(client, start(client, "a")["session_id"])

    def refused(model: str, state: dict[str, Any]) -> dict[str, Any]:
        response = client.post(f"/models/{model}/sessions", json={"state": state})
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "state_mismatch"
        return response.json()["error"]["details"]

    assert refused("b", saved) == {"field": "model", "expected": "b", "got": "a"}
    assert refused("a", {**saved, "version": 7}) == {"field": "version", "expected": 1, "got": 7}
    # Deleted and trained again under the same name: another model, whose weights the state does not fit.
    assert client.delete("/models/a").status_code == 204
    train(client, "a", architecture="lstm", dataset="noisy_trend", epochs=1, params=dict(SMALL_PARAMS))
    details = refused("a", saved)
    assert details["field"] == "incarnation" and details["got"] == saved["incarnation"] != details["expected"]
    # A fork of a session of another model, likewise.
    other = start(client, "b")["session_id"]
    assert client.post("/models/a/sessions", json={"fork_of": other}).json()["error"]["details"]["field"] == "model"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"h": [[0.0, 0.0]]}, "state.h"),
        ({"c": [[0.0] * 8, [0.0] * 8]}, "state.c"),
        ({"h": [["0.5"] * 8]}, "state.h[0][0]"),
        ({"format": "lstm-serve.session-state.v9"}, "state.format"),
        ({"steps_seen": -1}, "state.steps_seen"),
    ],
)
def test_a_malformed_state_is_422_naming_the_field(
    served: TestClient, change: dict[str, Any], field: str  # noqa: F811
) -> None:
    saved = snapshot(served, start(served, MODEL)["session_id"])
    response = served.post(f"/models/{MODEL}/sessions", json={"state": {**saved, **change}})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] == field


def test_a_non_finite_state_and_conflicting_starts_are_422(served: TestClient) -> None:  # noqa: F811
    saved = snapshot(served, start(served, MODEL)["session_id"])
    body = '{"state": %s}' % json.dumps(saved).replace('"h": [[0.0', '"h": [[1e999', 1)
    response = served.post(f"/models/{MODEL}/sessions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["details"]["field"] == "state.h[0][0]"
    both = served.post(f"/models/{MODEL}/sessions", json={"state": saved, "fork_of": "x"})
    assert both.status_code == 422 and "at most one of" in both.json()["error"]["message"]
    unknown = served.post(f"/models/{MODEL}/sessions", json={"fork_of": "no-such-session"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "session_not_found"
