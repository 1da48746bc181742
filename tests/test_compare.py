""""Which architecture fits my data?" through POST /compare and the job's report."""

import struct
from typing import Any

from fastapi.testclient import TestClient

from models.training.comparison import Entry, rank, recommend, recommended
from tests.conftest import SMALL_PARAMS, wait_for_job


def run_compare(client: TestClient, **body: Any) -> dict[str, Any]:
    body.setdefault("epochs", 2)
    body.setdefault("params", dict(SMALL_PARAMS))
    response = client.post("/compare", json=body)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


def png_size(content: bytes) -> tuple[int, int]:
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    assert content[12:16] == b"IHDR"
    return struct.unpack(">II", content[16:24])


def test_compare_on_float_dataset_ranks_and_skips_token_architectures(client: TestClient) -> None:
    job = run_compare(client, dataset="noisy_trend", epochs=3, keep_best_as="winner")
    report = job["report"]
    rows = report["leaderboard"]
    assert {r["architecture"] for r in rows} == {"lstm", "stateful_lstm", "td_dense_lstm"}
    accuracies = [r["val_accuracy"] for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    for row in rows:
        assert 0.0 <= row["val_accuracy"] <= 1.0 and row["val_loss"] > 0
        assert row["param_count"] > 0 and row["train_seconds"] > 0 and row["predict_ms_per_sequence"] > 0
    by_name = {r["architecture"]: r for r in rows}
    # Same network, same seed: stateful_lstm reproduces lstm and says so.
    assert by_name["stateful_lstm"]["val_accuracy"] == by_name["lstm"]["val_accuracy"]
    assert by_name["stateful_lstm"]["note"]
    assert by_name["td_dense_lstm"]["param_count"] > by_name["lstm"]["param_count"]
    assert set(report["skipped"]) == {"embedding_lstm", "embedding_bilstm"}
    assert "whole-number token ids" in report["skipped"]["embedding_lstm"]
    assert report["recommended"] in by_name
    assert report["recommendation"].startswith(f"Best: {rows[0]['architecture']}")
    assert "Skipped embedding_bilstm" in report["recommendation"]
    assert job["epoch"] == job["epochs"] == 9
    # The recommended architecture is now a served model.
    kept = client.get("/models/winner").json()
    assert kept["architecture"] == report["recommended"] == report["kept_as"]["architecture"]
    assert job["version"] == kept["version"] == 1
    prediction = client.post("/models/winner/predict", json={"sequences": [[0.1, 0.2, 0.3]]})
    assert prediction.status_code == 200
    plot = client.get(f"/jobs/{job['job_id']}/report.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    width, height = png_size(plot.content)
    assert width > 500 and height > 300


def test_compare_on_token_dataset_trains_token_architectures_only(client: TestClient) -> None:
    job = run_compare(client, dataset="token_cue_start", epochs=3)
    rows = job["report"]["leaderboard"]
    assert {r["architecture"] for r in rows} == {"embedding_lstm", "embedding_bilstm"}
    assert set(job["report"]["skipped"]) == {"lstm", "stateful_lstm", "td_dense_lstm"}
    by_name = {r["architecture"]: r for r in rows}
    assert by_name["embedding_bilstm"]["param_count"] > by_name["embedding_lstm"]["param_count"]
    assert "bidirectional" in job["report"]["recommendation"].lower() or "both directions" in job["report"]["recommendation"]
    assert "kept_as" not in job["report"]


def test_compare_user_data_and_explicit_architectures(client: TestClient) -> None:
    sequences = [[1, 2, 3], [3, 2, 1], [1, 1], [2, 2, 2, 2]] * 5
    labels = [1, 0, 1, 0] * 5
    # Integer data reads as tokens, but a float architecture asked for by name is trained anyway.
    job = run_compare(client, data={"sequences": sequences, "labels": labels}, architectures=["lstm", "embedding_lstm"])
    assert {r["architecture"] for r in job["report"]["leaderboard"]} == {"lstm", "embedding_lstm"}
    assert job["report"]["skipped"] == {}


def test_compare_refuses_what_cannot_work(client: TestClient) -> None:
    floats = {"sequences": [[0.5, 1.5], [0.1, 0.2]] * 3, "labels": [0, 1] * 3}
    response = client.post("/compare", json={"data": floats, "architectures": ["embedding_bilstm"]})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "architectures"
    response = client.post("/compare", json={"dataset": "noisy_trend", "validation_split": 0})
    assert response.status_code == 422 and response.json()["error"]["details"]["field"] == "validation_split"
    response = client.post("/compare", json={"dataset": "noisy_trend", "architectures": ["lstm", "lstm"]})
    assert response.status_code == 422
    response = client.post("/compare", json={"dataset": "noisy_trend", "architectures": ["gru"]})
    assert response.status_code == 422 and response.json()["error"]["details"]["field"] == "architectures[0]"


def test_report_png_of_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/jobs/nope/report.png")
    assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"


def test_report_png_of_a_training_job_is_409(client: TestClient) -> None:
    data = {"sequences": [[0.1, 0.2], [0.3, 0.4]] * 3, "labels": [0, 1] * 3}
    response = client.post("/models/x/train", json={"data": data, "epochs": 1, "params": {"units": 2}})
    job = wait_for_job(client, response.json()["job_id"])
    plot = client.get(f"/jobs/{job['job_id']}/report.png")
    assert plot.status_code == 409 and plot.json()["error"]["code"] == "report_not_ready"


def _entry(name: str, accuracy: float, params: int) -> Entry:
    return Entry(name, accuracy, 0.5, params, 1.0, 0.01)


def test_recommendation_explains_each_pair_and_prefers_the_smaller_model_within_noise() -> None:
    board = rank([_entry("td_dense_lstm", 0.95, 2500), _entry("lstm", 0.70, 500)])
    text = recommend(board, {}, epochs=3)
    assert text.startswith("Best: td_dense_lstm") and "per-step Dense projection helped (+25.0% over lstm)" in text
    assert recommended(board).architecture == "td_dense_lstm"

    board = rank([_entry("embedding_bilstm", 0.91, 3800), _entry("embedding_lstm", 0.90, 2700)])
    text = recommend(board, {"lstm": "token data"}, epochs=3)
    assert recommended(board).architecture == "embedding_lstm"
    assert "the recommendation is embedding_lstm" in text
    assert "gained nothing worth its cost (+1.0%)" in text and text.endswith("Skipped lstm: token data")

    weak = rank([_entry("lstm", 0.55, 500), _entry("td_dense_lstm", 0.58, 2500)])
    assert "No architecture learned this task well" in recommend(weak, {}, epochs=1)
    assert "helped" not in recommend(weak, {}, epochs=1)
