"""The HTML page at ``GET /``: its content through TestClient, its escaping, and a real render in headless
Chromium against a real service process."""

import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.training.jobs import Job
from service.api.ui import esc, render_page
from service.schemas import comparison_report
from tests.conftest import SMALL_PARAMS, TRAINED, wait_for_job
from tests.process import ServiceProcess, service_env
from tests.system import required_program

COMPARED = ("lstm", "td_dense_lstm")
CHROMIUM_TIMEOUT_S = 90


def small_compare(post: Any, get_job: Any) -> dict[str, Any]:
    body = {"dataset": "noisy_trend", "epochs": 1, "architectures": list(COMPARED), "params": dict(SMALL_PARAMS)}
    response = post("/compare", json=body)
    assert response.status_code == 202, response.text
    job = get_job(response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


def leaderboard_of(page: str) -> str:
    match = re.search(r'<table id="leaderboard">.*?</table>', page, re.S)
    assert match, "no leaderboard table"
    return match.group(0)


@pytest.fixture(scope="module")
def compared(trained: TestClient) -> dict[str, Any]:
    """A small comparison on the shared app (no ``keep_best_as``: the trained models stay as they are)."""
    return small_compare(trained.post, lambda job_id: wait_for_job(trained, job_id))


def test_page_lists_models_jobs_architectures_and_latest_comparison(trained: TestClient, compared: dict[str, Any]) -> None:
    response = trained.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for name in TRAINED:
        assert f"<code>{name}</code>" in page
    for architecture in ("lstm", "stateful_lstm", "td_dense_lstm", "embedding_lstm", "embedding_bilstm"):
        assert f"<code>{architecture}</code>" in page
    assert "The default whole-sequence classifier" in page  # a when_to_use text
    board = leaderboard_of(page)
    for architecture in COMPARED:
        assert f"<code>{architecture}</code>" in board
    job_id = compared["job_id"]
    assert f'<img id="report-plot" src="/jobs/{job_id}/report.png"' in page
    report = comparison_report(compared["report"])
    assert esc(report.recommendation) in page
    for column in report.columns:  # the task's metric columns
        assert f"<th>{column}</th>" in board
    assert f"<code>{job_id}</code>" in page  # in the recent jobs too
    plot = trained.get(f"/jobs/{job_id}/report.png")
    assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"


def test_page_is_not_in_the_openapi_schema(trained: TestClient) -> None:
    assert "/" not in trained.get("/openapi.json").json()["paths"]


def test_page_without_models_or_comparisons(client: TestClient) -> None:
    page = client.get("/").text
    assert "No models yet." in page and "No finished comparison yet" in page
    assert 'id="leaderboard"' not in page


def test_escaping_helper() -> None:
    assert esc("<script>alert('x')</script>") == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert esc('"onerror=x') == "&quot;onerror=x"
    assert esc(None) == ""


def test_page_escapes_every_value() -> None:
    hostile = '<script>alert("x")</script>'
    job = Job(job_id="<b>id", kind="compare", model=hostile, epochs=1, status="succeeded", epoch=1)
    job.report = {
        "leaderboard": [
            {"architecture": hostile, "val_accuracy": 0.5, "val_loss": 0.7, "param_count": 1, "train_seconds": 1.0,
             "predict_ms_per_sequence": 0.1, "note": hostile}
        ],
        "recommended": hostile,
        "recommendation": hostile,
        "skipped": {hostile: hostile, "lstm": hostile},
        "data": hostile,
    }
    models = [{"name": hostile, "architecture": hostile, "version": hostile, "metrics": {}, "backend": hostile}]
    page = render_page(models, [job], job)
    assert "<script>alert" not in page and "<b>id" not in page
    assert esc(hostile) in page
    assert 'src="/jobs/%3Cb%3Eid/report.png"' in page
    # One reason, two architectures: said once.
    assert page.count(f"<code>{esc(hostile)}</code>, <code>lstm</code>: {esc(hostile)}</li>") == 1


# ------------------------------------------------------------------------------- real browser, real server


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def png_size(path: Path) -> tuple[int, int]:
    content = path.read_bytes()
    assert content[:8] == b"\x89PNG\r\n\x1a\n" and content[12:16] == b"IHDR"
    return struct.unpack(">II", content[16:24])


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)


@pytest.mark.e2e
def test_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = required_program(find_chromium(), "chromium")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    service = ServiceProcess(workdir, service_env(tmp_path / "models", DEMO_MODEL="false"), "ui")
    try:
        service.wait_ready()
        service.train("ui-model", architecture="lstm", dataset="noisy_trend", epochs=1, params={"units": 4})
        job = small_compare(service.http.post, service.wait_job)
        url = f"{service.url}/"

        shot = tmp_path / "page.png"
        result = chromium(binary, tmp_path / "profile-1", f"--screenshot={shot}", "--window-size=1200,1600", url)
        assert shot.exists(), result.stderr[-2000:]
        assert png_size(shot) == (1200, 1600)
        assert shot.stat().st_size > 30_000  # a blank or error page compresses to a few KB

        dom = chromium(binary, tmp_path / "profile-2", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        board = leaderboard_of(dom.stdout)
        for architecture in COMPARED:
            assert architecture in board
        assert f'src="/jobs/{job["job_id"]}/report.png"' in dom.stdout
        assert "<code>ui-model</code>" in dom.stdout
    finally:
        service.kill()


def test_page_shows_live_sessions_by_model(app_client: Callable[..., TestClient], trained_dir: Path) -> None:
    client = app_client(trained_dir)
    assert "No live sessions." in client.get("/").text
    for model in ("m-lstm", "m-lstm", "m-emb"):
        assert client.post(f"/models/{model}/sessions").status_code == 201
    page = client.get("/").text
    table = page[page.index('<table id="sessions">') :]
    table = table[: table.index("</table>")]
    assert "<td>m-emb</td><td>1</td>" in table and "<td>m-lstm</td><td>2</td>" in table


def test_page_shows_the_task_metric_columns_of_a_regression_report() -> None:
    job = Job(job_id="reg", kind="compare", model=None, epochs=2, status="succeeded", epoch=2)
    row = {"param_count": 500, "train_seconds": 1.0, "predict_ms_per_sequence": 0.1, "val_accuracy": None, "val_loss": 0.05}
    job.report = {
        "leaderboard": [
            {**row, "architecture": "td_dense_lstm", "metrics": {"val_mae": 0.125, "val_rmse": 0.25, "val_loss": 0.0625}},
            {**row, "architecture": "lstm", "metrics": {"val_mae": 0.5, "val_rmse": 0.75, "val_loss": 0.5625}},
        ],
        "task": "regression",
        "ranked_by": "val_mae",
        "recommended": "td_dense_lstm",
        "recommendation": "Best: td_dense_lstm with validation MAE 0.125 after 2 epochs.",
    }
    board = leaderboard_of(render_page([], [job], job))
    assert "<th>val_mae</th><th>val_rmse</th><th>val_loss</th>" in board and "val_accuracy" not in board
    assert "<td>0.125</td><td>0.250</td><td>0.0625</td>" in board
