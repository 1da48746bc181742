"""Two real replicas on one MODEL_DIR: what one writes or deletes, the other serves within the sync bound.

Replica A trains, retrains, deletes and recreates a model (with other units) under one name; replica B
serves each change within ``MODEL_SYNC_INTERVAL_S`` (0.5 s by default; the test polls with a 3 s
deadline), the recreated model with its new weights (equal to Keras on its artifact, 1e-5), and a session
B started on the old model answers ``model_deleted`` for good.
"""

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest

from tests.process import ServiceProcess, process_factory

pytestmark = pytest.mark.e2e

#: How long B may take to show a change of A in this test (the promise is MODEL_SYNC_INTERVAL_S, 0.5 s).
DEADLINE_S = 3.0
SEQUENCES = [[0.2, 0.4, 0.6, 0.8], [0.9, 0.7, 0.1], [0.5] * 6]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, ServiceProcess, Path]]:
    root = tmp_path_factory.mktemp("registry-replicas")
    workdir = root / "cwd"
    workdir.mkdir()
    start, started = process_factory(workdir)
    try:
        a = start(root / "models", "a", DEMO_MODEL="false")
        b = start(root / "models", "b", DEMO_MODEL="false")
        a.wait_ready()
        b.wait_ready()
        yield a, b, root / "models"
    finally:
        for service in started:
            service.kill()


def within_deadline(check: Callable[[], httpx.Response | None]) -> httpx.Response:
    """The first response ``check`` accepts (returns), polled until the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        response = check()
        if response is not None:
            return response
        assert time.monotonic() < deadline, f"not seen within {DEADLINE_S} s"
        time.sleep(0.05)


def keras_probabilities(model_dir: Path, meta: dict[str, Any]) -> list[float]:
    """The version's saved artifact run by Keras on the pre-padded sequences."""
    model = keras.models.load_model(model_dir / meta["name"] / str(meta["version"]) / "model.keras", safe_mode=True, compile=False)
    batch = np.array([[0.0] * (meta["max_len"] - len(s)) + s for s in SEQUENCES], np.float32)[..., None]
    return np.asarray(model(batch)).reshape(-1).tolist()


def train(service: ServiceProcess, units: int, seed: int) -> dict[str, Any]:
    return service.train("r", architecture="lstm", dataset="noisy_trend", epochs=1, params={"units": units}, seed=seed)


def test_versions_deletes_and_recreates_on_one_replica_are_served_by_the_other(
    replicas: tuple[ServiceProcess, ServiceProcess, Path],
) -> None:
    a, b, model_dir = replicas
    train(a, units=4, seed=1)
    # New version on A: B serves it (B knew version 1, so only its periodic check can show version 2).
    assert b.http.get("/models/r").json()["versions"] == [1]
    session = b.http.post("/models/r/sessions").json()["session_id"]
    assert b.http.post(f"/sessions/{session}/step", json={"values": [0.5]}).status_code == 200
    train(a, units=4, seed=2)
    seen = within_deadline(lambda: r if (r := b.http.get("/models/r")).json()["versions"] == [1, 2] else None)
    assert seen.json()["version"] == 2

    # Delete on A: 404 on B, and B's session answers model_deleted.
    assert a.http.delete("/models/r").status_code == 204
    gone = within_deadline(lambda: r if (r := b.http.get("/models/r")).status_code == 404 else None)
    assert gone.json()["error"]["code"] == "model_not_found"
    assert b.http.post("/models/r/predict", json={"sequences": SEQUENCES}).status_code == 404
    ended = b.http.post(f"/sessions/{session}/step", json={"values": [0.5]})
    assert ended.status_code == 404 and ended.json()["error"]["code"] == "model_deleted"

    # Recreated on A with other units: B serves the new weights, its old session stays ended.
    train(a, units=3, seed=3)
    new = within_deadline(lambda: r if (r := b.http.get("/models/r")).status_code == 200 else None).json()
    assert new["versions"] == [1] and new["params"]["units"] == 3
    served = b.http.post("/models/r/predict", json={"sequences": SEQUENCES})
    assert served.status_code == 200, served.text
    got = [p["probability"] for p in served.json()["predictions"]]
    assert got == pytest.approx(keras_probabilities(model_dir, new), abs=1e-5)
    assert got == [p["probability"] for p in a.predict("r", SEQUENCES)["predictions"]]
    for response in (
        b.http.post(f"/sessions/{session}/step", json={"values": [0.5]}),
        b.http.post(f"/sessions/{session}/step", json={"values": [0.5], "seq": 1}),
        b.http.post(f"/sessions/{session}/reset"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "model_deleted"
    # A new session on B starts on the new model and steps with its 3 units.
    fresh = b.http.post("/models/r/sessions").json()
    assert fresh["version"] == 1
    assert b.http.post(f"/sessions/{fresh['session_id']}/step", json={"values": [0.5]}).status_code == 200
