""""Which architecture fits my data?" through POST /compare and the job's report."""

import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from models.serving.model_index import ModelIndex
from models.training.comparison import plan_comparison
from models.training.comparison_report import (
    SCORING,
    Task,
    ComparisonReport,
    LeaderboardRow,
    rank,
    recommend,
    recommended,
)
from models.training.datasets import DATASETS
from models.training.fitting import FitSettings
from service.cli import leaderboard_table
from service.schemas import comparison_report
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
    report = comparison_report(job["report"])
    rows = report.leaderboard
    assert {r.architecture for r in rows} == {"lstm", "stateful_lstm", "td_dense_lstm"}
    assert report.task == "binary" and report.ranked_by == "val_accuracy" and report.validated
    accuracies = [r.val_accuracy for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    for row in rows:
        assert row.val_accuracy is not None and 0.0 <= row.val_accuracy <= 1.0
        assert row.val_loss is not None and row.val_loss > 0
        assert row.metric("val_accuracy") == row.val_accuracy and row.metric("accuracy") is not None
        assert row.param_count > 0 and row.train_seconds > 0 and row.predict_ms_per_sequence > 0
    by_name = {r.architecture: r for r in rows}
    # Same network, same seed: stateful_lstm reproduces lstm and says so.
    assert by_name["stateful_lstm"].val_accuracy == by_name["lstm"].val_accuracy
    assert by_name["stateful_lstm"].note
    assert by_name["td_dense_lstm"].param_count > by_name["lstm"].param_count
    assert set(report.skipped) == {"embedding_lstm", "embedding_bilstm"}
    assert "whole-number token ids" in report.skipped["embedding_lstm"]
    # Both token architectures share one reason: said once, naming both, and not again in the advice.
    assert report.skipped_reasons() == [(["embedding_lstm", "embedding_bilstm"], report.skipped["embedding_lstm"])]
    assert "whole-number token ids" not in report.recommendation and "Skipped" not in report.recommendation
    assert report.recommended in by_name
    assert report.recommendation.startswith(f"Best: {rows[0].architecture} with validation accuracy")
    # The baseline is the majority class share of the validation split: near a half on this balanced set.
    assert report.baseline is not None and 0.4 < report.baseline < 0.6
    assert report.data == "dataset:noisy_trend" and report.complete
    assert job["epoch"] == job["epochs"] == 9
    # The recommended architecture is now a served model.
    kept = client.get("/models/winner").json()
    assert report.kept_as is not None
    assert kept["architecture"] == report.recommended == report.kept_as.architecture
    assert job["version"] == kept["version"] == 1
    prediction = client.post("/models/winner/predict", json={"sequences": [[0.1, 0.2, 0.3]]})
    assert prediction.status_code == 200
    plot = client.get(f"/jobs/{job['job_id']}/report.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    width, height = png_size(plot.content)
    assert width > 500 and height > 300


def test_compare_on_token_dataset_trains_token_architectures_only(client: TestClient) -> None:
    job = run_compare(client, dataset="token_cue_start", epochs=3)
    report = comparison_report(job["report"])
    assert {r.architecture for r in report.leaderboard} == {"embedding_lstm", "embedding_bilstm"}
    assert set(report.skipped) == {"lstm", "stateful_lstm", "td_dense_lstm"}
    # The three float architectures were skipped for one reason: it is said once.
    [(names, reason)] = report.skipped_reasons()
    assert names == ["lstm", "stateful_lstm", "td_dense_lstm"] and reason.startswith("token data")
    assert reason not in report.recommendation
    by_name = {r.architecture: r for r in report.leaderboard}
    assert by_name["embedding_bilstm"].param_count > by_name["embedding_lstm"].param_count
    assert "bidirectional" in report.recommendation.lower() or "both directions" in report.recommendation
    assert report.kept_as is None


def test_compare_user_data_and_explicit_architectures(client: TestClient) -> None:
    sequences = [[1, 2, 3], [3, 2, 1], [1, 1], [2, 2, 2, 2]] * 5
    labels = [1, 0, 1, 0] * 5
    # Integer data reads as tokens, but a float architecture asked for by name is trained anyway.
    job = run_compare(client, data={"sequences": sequences, "labels": labels}, architectures=["lstm", "embedding_lstm"])
    report = comparison_report(job["report"])
    assert {r.architecture for r in report.leaderboard} == {"lstm", "embedding_lstm"}
    assert report.skipped == {} and report.data == "request"


def test_compare_without_room_for_validation_ranks_on_training_accuracy_and_says_so(client: TestClient) -> None:
    # Four sequences at validation_split 0.2 hold none out (int(4 * 0.2) == 0).
    data = {"sequences": [[0.1, 0.9], [0.9, 0.1], [0.2, 0.8], [0.8, 0.2]], "labels": [1, 0, 1, 0]}
    job = run_compare(client, data=data, architectures=["lstm", "td_dense_lstm"])
    report = comparison_report(job["report"])
    assert not report.validated and report.ranked_by == "accuracy"
    assert report.columns == ("accuracy", "loss")
    for row in report.leaderboard:
        assert row.val_accuracy is None and row.val_loss is None
        assert "val_loss" not in row.metrics and row.metric("accuracy") is not None
    scores = [row.metric("accuracy") for row in report.leaderboard]
    assert scores == sorted(scores, reverse=True)
    assert report.recommendation.startswith(f"Best: {report.leaderboard[0].architecture} with training accuracy")
    assert report.recommendation.count("No validation: 4 sequences with validation_split 0.2 leave none") == 1


def test_report_schema_is_in_openapi(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    report = schemas["ComparisonReport"]["properties"]
    for name in ("leaderboard", "recommended", "recommendation", "skipped", "task", "ranked_by", "validated", "kept_as"):
        assert name in report, name
    row = schemas["LeaderboardRow"]["properties"]
    assert {"architecture", "val_accuracy", "val_loss", "param_count", "metrics"} <= set(row)
    job_report = schemas["JobPublic"]["properties"]["report"]
    assert {"$ref": "#/components/schemas/ComparisonReport"} in job_report["anyOf"]


def test_compare_on_the_regression_dataset_takes_its_task_and_ranks_by_error(client: TestClient) -> None:
    job = run_compare(client, dataset="next_value", architectures=["lstm", "td_dense_lstm"])
    report = comparison_report(job["report"])
    assert report.task == "regression" and report.ranked_by == "val_mae" and report.validated
    errors = [row.metric("val_mae") for row in report.leaderboard]
    assert all(e is not None and e >= 0 for e in errors) and errors == sorted(errors)
    for row in report.leaderboard:
        # RMSE is never below MAE: both come from the fit's history, on the same held-out sequences.
        assert row.metric("val_rmse") is not None and row.metric("val_rmse") >= row.metric("val_mae") - 1e-6
    assert "accuracy" not in report.recommendation and "error" in report.recommendation


def test_training_on_the_movements_dataset_takes_its_task_width_and_classes(client: TestClient) -> None:
    body = {"architecture": "lstm", "dataset": "movements", "epochs": 1, "params": dict(SMALL_PARAMS)}
    response = client.post("/models/moves/train", json=body)
    assert response.status_code == 202, response.text
    assert wait_for_job(client, response.json()["job_id"])["status"] == "succeeded"
    model = client.get("/models/moves").json()
    assert (model["task"], model["n_features"], model["n_classes"]) == ("multiclass", 3, 4)
    answer = client.post("/models/moves/predict", json={"sequences": [[[0.1, -0.2, 0.3]] * 5]})
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    assert len(prediction["probabilities"]) == 4 and abs(sum(prediction["probabilities"]) - 1) < 1e-5
    assert prediction["label"] == int(np.argmax(prediction["probabilities"]))
    refused = client.post(
        "/models/moves2/train", json={**body, "params": {**SMALL_PARAMS, "task": "regression"}}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"]["field"] == "params.task"
    assert refused.json()["error"]["details"]["expected"] == "multiclass"


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


def _row(name: str, params: int, **metrics: float) -> LeaderboardRow:
    return LeaderboardRow(
        name, metrics.get("val_accuracy"), metrics.get("val_loss", 0.5), params, 1.0, 0.01, metrics={"val_loss": 0.5, **metrics}
    )


def _report(rows: list[LeaderboardRow], task: Task = "binary", baseline: float | None = 0.5, **fields: Any) -> ComparisonReport:
    ranked_by = fields.pop("ranked_by", "val_" + SCORING[task].metric)
    return ComparisonReport(rank(rows, SCORING[task], ranked_by), task=task, ranked_by=ranked_by, baseline=baseline, **fields)


def test_recommendation_explains_each_pair_and_prefers_the_smaller_model_within_noise() -> None:
    report = _report([_row("td_dense_lstm", 2500, val_accuracy=0.95), _row("lstm", 500, val_accuracy=0.70)])
    text = recommend(report, epochs=3, n_sequences=100, validation_split=0.2)
    assert text.startswith("Best: td_dense_lstm with validation accuracy 95.0% after 3 epochs.")
    assert text.count("per-step Dense projection helped (+25.0% over lstm)") == 1
    assert recommended(report.leaderboard, SCORING["binary"], "val_accuracy").architecture == "td_dense_lstm"

    report = _report([_row("embedding_bilstm", 3800, val_accuracy=0.91), _row("embedding_lstm", 2700, val_accuracy=0.90)],
                     skipped={"lstm": "token data"})
    text = recommend(report, epochs=3, n_sequences=100, validation_split=0.2)
    assert recommended(report.leaderboard, SCORING["binary"], "val_accuracy").architecture == "embedding_lstm"
    assert text.count("the recommendation is embedding_lstm") == 1
    assert text.count("gained nothing worth its cost (+1.0% over embedding_lstm)") == 1
    assert "token data" not in text and "Skipped" not in text  # the report lists skipped ones once, elsewhere

    weak = _report([_row("lstm", 500, val_accuracy=0.55), _row("td_dense_lstm", 2500, val_accuracy=0.58)])
    text = recommend(weak, epochs=1, n_sequences=100, validation_split=0.2)
    assert "No architecture learned this task well (always answering the most frequent class scores 50.0%)" in text
    assert "helped" not in text


def test_every_sentence_of_the_advice_is_said_once() -> None:
    rows = [_row(name, 100 * (i + 1), val_accuracy=0.8 - i / 100) for i, name in enumerate(("lstm", "stateful_lstm", "td_dense_lstm"))]
    text = recommend(_report(rows), epochs=2, n_sequences=100, validation_split=0.2)
    sentences = [s for s in text.replace("; ", ". ").split(". ") if s]
    assert len(sentences) == len(set(sentences)), text
    assert text.count("stateful_lstm") == 1  # the choose-it-when sentence; the row's note says it trained as lstm


def test_classification_ranks_higher_accuracy_first_then_lower_loss_then_fewer_params() -> None:
    rows = [
        _row("a", 300, val_accuracy=0.8, val_loss=0.4),
        _row("b", 200, val_accuracy=0.9, val_loss=0.5),
        _row("c", 100, val_accuracy=0.8, val_loss=0.3),
        _row("d", 50, val_accuracy=0.8, val_loss=0.3),
    ]
    assert [r.architecture for r in rank(rows, SCORING["multiclass"], "val_accuracy")] == ["b", "d", "c", "a"]


def test_regression_ranks_lower_error_first_and_speaks_of_error() -> None:
    rows = [
        _row("lstm", 500, val_mae=0.30, val_rmse=0.40),
        _row("td_dense_lstm", 2500, val_mae=0.20, val_rmse=0.26),
        _row("stateful_lstm", 500, val_mae=0.30, val_rmse=0.40),
    ]
    report = _report(rows, task="regression", baseline=1.0)
    assert [r.architecture for r in report.leaderboard][0] == "td_dense_lstm"
    assert report.columns == ("val_mae", "val_rmse", "val_loss")
    text = recommend(report, epochs=2, n_sequences=100, validation_split=0.2)
    assert text.startswith("Best: td_dense_lstm with validation MAE 0.2 after 2 epochs.")
    assert "per-step Dense projection helped (33% lower error than lstm)" in text
    assert "accuracy" not in text

    # Within 5% of the best error: the smaller model is recommended.
    close = _report([_row("td_dense_lstm", 2500, val_mae=0.200), _row("lstm", 500, val_mae=0.205)], task="regression", baseline=1.0)
    assert recommended(close.leaderboard, SCORING["regression"], "val_mae").architecture == "lstm"
    text = recommend(close, epochs=2, n_sequences=100, validation_split=0.2)
    assert "lstm scores 0.205 with 500 parameters instead of 2500" in text
    assert "added parameters and time but no lower error (2% lower error than lstm)" in text

    weak = _report([_row("lstm", 500, val_mae=0.95)], task="regression", baseline=1.0)
    text = recommend(weak, epochs=2, n_sequences=100, validation_split=0.2)
    assert "No architecture learned this task well (always answering the training mean scores 1)" in text


def test_reports_written_before_the_typed_schema_still_read() -> None:
    old = {
        "leaderboard": [{"architecture": "lstm", "val_accuracy": 0.7, "val_loss": 0.6, "param_count": 500,
                         "train_seconds": 1.0, "predict_ms_per_sequence": 0.01, "note": None}],
        "recommended": "lstm", "recommendation": "Best: lstm", "skipped": {}, "data": "dataset:noisy_trend",
        "settings": {"epochs": 1}, "complete": True,
    }
    report = comparison_report(old)
    assert report.task == "binary" and report.validated and report.kept_as is None
    assert report.leaderboard[0].metric("val_accuracy") == 0.7 and report.columns == ("val_accuracy", "val_loss")
    partial = comparison_report({"leaderboard": [], "complete": False})
    assert not partial.complete and partial.recommended is None


def test_a_builtin_dataset_is_generated_once_per_comparison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = DATASETS["noisy_trend"]

    def counted(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(n)
        return original._generate(rng, n, length)

    monkeypatch.setitem(DATASETS, "noisy_trend", replace(original, _generate=counted))
    _, total_epochs = plan_comparison(
        ModelIndex(tmp_path / "models"),
        lambda job_id: tmp_path / f"{job_id}.png",
        architectures=None,
        overrides={"units": 2},
        sequences=None,
        labels=None,
        dataset="noisy_trend",
        settings=FitSettings(epochs=1),
        keep_best_as=None,
    )
    assert total_epochs == 3  # lstm, stateful_lstm, td_dense_lstm
    assert calls == [original.n_sequences]


def test_cli_leaderboard_shows_the_task_columns() -> None:
    rows = [_row("lstm", 500, mae=0.5, rmse=0.75, loss=0.5625), _row("td_dense_lstm", 2500, mae=0.125, rmse=0.25, loss=0.0625)]
    report = _report(rows, task="regression", ranked_by="mae", validated=False, recommended="td_dense_lstm")
    console = Console(width=200, record=True)
    console.print(leaderboard_table(report))
    text = console.export_text()
    assert "mae" in text and "rmse" in text and "val_accuracy" not in text
    lines = [line for line in text.splitlines() if "lstm" in line]
    assert "td_dense_lstm *" in lines[0] and "0.125" in lines[0] and "0.250" in lines[0] and "0.0625" in lines[0]
