"""Persistence: a new app on the same MODEL_DIR serves the same models and knows the same jobs."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import TRAINED, make_settings, train

DATA = {
    "sequences": [[0.1, 0.5, 0.9], [0.9, 0.4], [-0.3, 0.2, 0.6, 1.0], [1.0, 0.6, 0.3, -0.1]],
    "labels": [1, 0, 1, 0],
}
PROBE = [[0.2, 0.4, 0.6, 0.8], [0.5], [1.0, -1.0, 1.0]]


def probabilities(client: TestClient, name: str, sequences: list[list[float]], **extra: object) -> list[float]:
    response = client.post(f"/models/{name}/predict", json={"sequences": sequences, **extra})
    assert response.status_code == 200, response.text
    return [p["probability"] for p in response.json()["predictions"]]


def test_restart_serves_the_same_models_and_jobs(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    with TestClient(create_app(make_settings(model_dir))) as first:
        job = train(first, "persist", architecture="lstm", data=DATA, params={"units": 4}, epochs=2)
        meta = first.get("/models/persist").json()
        before = probabilities(first, "persist", PROBE)
        # A job still running when the app shuts down is cancelled, not left dangling.
        long = first.post("/models/persist/train", json={
            "dataset": "noisy_trend", "params": {"units": 4}, "epochs": 200, "batch_size": 8,
        }).json()["job_id"]
        deadline = time.monotonic() + 60
        while first.get(f"/jobs/{long}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)

    with TestClient(create_app(make_settings(model_dir))) as second:
        assert second.get("/health/ready").json() == {"status": "ok"}
        assert second.get("/models/persist").json() == meta
        assert [m["name"] for m in second.get("/models").json()] == ["persist"]
        assert probabilities(second, "persist", PROBE) == before
        assert probabilities(second, "persist", PROBE, version=1) == before
        assert second.get(f"/jobs/{job['job_id']}").json() == job
        interrupted = second.get(f"/jobs/{long}").json()
        assert interrupted["status"] == "cancelled"
        assert interrupted["version"] is None
        # Version numbers carry on from what is on disk.
        again = train(second, "persist", architecture="lstm", data=DATA, params={"units": 4}, epochs=1)
        assert again["version"] == 2
        assert second.get("/models/persist").json()["versions"] == [1, 2]
        assert probabilities(second, "persist", PROBE, version=1) == before


def test_restart_rebuilds_missing_engine_caches(trained: TestClient, trained_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "models"
    shutil.copytree(trained_dir, copy)
    rebuilt = ["m-stateful", "m-emb", "m-bi"]  # the seed's (1, 1, 1) artifact; a step engine; none
    removed = [path for name in rebuilt for path in copy.glob(f"{name}/*/*.onnx")]
    assert removed, "the trained models should have ONNX caches"
    for path in removed:
        path.unlink()
    rng = np.random.default_rng(0)
    with TestClient(create_app(make_settings(copy))) as client:
        for name, (arch, _) in TRAINED.items():  # models with and without their caches side by side
            if arch.startswith("embedding"):
                sequences = rng.integers(0, 50, (4, 30)).tolist()
            else:
                sequences = rng.normal(0.0, 1.0, (4, 30)).round(4).tolist()
            expected = probabilities(trained, name, sequences)
            assert probabilities(client, name, sequences) == pytest.approx(expected, abs=1e-5), name
            assert client.get(f"/models/{name}").json() == trained.get(f"/models/{name}").json()
    assert all(path.exists() for path in removed)  # rebuilt and cached again


def test_restart_marks_unfinished_job_records_failed(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    with TestClient(create_app(make_settings(model_dir))) as first:
        job = train(first, "crash", data=DATA, params={"units": 4}, epochs=1)
    # What a crash mid-training leaves behind: a record still "running", a half-written version folder.
    jobs_dir = model_dir / ".jobs"
    record = json.loads((jobs_dir / f"{job['job_id']}.json").read_text())
    record.update(job_id="00000000deadbeef", status="running", epoch=1, version=None, finished_at=None)
    (jobs_dir / "00000000deadbeef.json").write_text(json.dumps(record))
    leftover = model_dir / "crash" / ".tmp-0123abcd"
    leftover.mkdir()
    (leftover / "model.keras").write_bytes(b"half")
    an_hour_and_more_ago = time.time() - 2 * 3600  # a crash's leftover, not a save in progress elsewhere
    os.utime(leftover, (an_hour_and_more_ago, an_hour_and_more_ago))

    with TestClient(create_app(make_settings(model_dir))) as second:
        stale = second.get("/jobs/00000000deadbeef").json()
        assert stale["status"] == "failed"
        assert stale["error"]["code"] == "interrupted"
        assert stale["finished_at"]
        assert second.get(f"/jobs/{job['job_id']}").json() == job
        assert second.get("/models/crash").json()["versions"] == [1]
        assert not leftover.exists()
        assert len(probabilities(second, "crash", PROBE)) == 3
        assert second.delete("/jobs/00000000deadbeef").status_code == 409
