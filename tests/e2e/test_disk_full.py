"""A full disk is an error, never a death: a real ``python -m service`` whose MODEL_DIR is a small tmpfs.

While the disk is full: a train request answers 507 ``insufficient_storage`` and leaves no job behind, and
so does an upload (leaving no version); a running job fails with that code (its record kept in memory) and every earlier version is still served;
a queued job waits; ``/health/ready`` answers 503. Once space is back, without a restart: ready is 200,
the queued job and new ones run, and the failed job's record reaches the disk.
"""

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Start
from tests.process import ServiceProcess, versions_on_disk
from tests.test_models import lstm_model, save

TINY = {"architecture": "lstm", "dataset": "noisy_trend", "params": {"units": 2}, "epochs": 1, "batch_size": 64}
#: Long enough (tens of seconds on 2 busy cores) to fill the disk while it runs; cancelled at the end if need be.
LONG = {**TINY, "epochs": 60}
TIMEOUT_S = 120.0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (the machine must allow mounting: root, no container restriction)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode}); needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write one file until the disk takes no more page."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def job_until(service: ServiceProcess, job_id: str, statuses: set[str], timeout: float = TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.http.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}\n{service.log_tail()}")


def test_full_disk_fails_jobs_cleanly_and_recovers_without_a_restart(start_service: Start, tmpfs: Path, tmp_path: Path) -> None:
    model_dir = tmpfs / "models"
    service = start_service(model_dir, DEMO_MODEL="false")
    service.wait_ready()
    first = service.train("m", **TINY)
    before = service.predict("m")
    assert first["version"] == 1 and before["version"] == 1

    running = service.http.post("/models/m/train", json=LONG).json()["job_id"]
    queued = service.http.post("/models/m/train", json=TINY).json()["job_id"]
    job_until(service, running, {"running"})
    assert service.http.get(f"/jobs/{queued}").json()["status"] == "queued"
    jobs_on_disk = sorted(p.name for p in (model_dir / ".jobs").iterdir())

    filler = fill(tmpfs)
    # A new job cannot be recorded: 507 with a code, and no job (nothing counts against MAX_QUEUED_JOBS).
    refused = service.http.post("/models/m/train", json=TINY)
    assert refused.status_code == 507, refused.text
    error = refused.json()["error"]
    assert error["code"] == "insufficient_storage"
    assert error["details"]["errno"] == "ENOSPC"
    assert {job["job_id"] for job in service.http.get("/jobs").json()} == {first["job_id"], running, queued}
    assert sorted(p.name for p in (model_dir / ".jobs").iterdir()) == jobs_on_disk
    assert service.http.get("/health/ready").status_code == 503
    upload = service.http.post("/models/m/load", files={"file": ("m.keras", save(lstm_model(), tmp_path))})
    assert upload.status_code == 507, upload.text
    assert upload.json()["error"]["code"] == "insufficient_storage"

    # The running job fails on storage at its next record or at its save; the worker lives on.
    failed = job_until(service, running, {"succeeded", "failed", "cancelled"})
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "insufficient_storage", failed
    assert service.predict("m") == before  # the earlier version still answers, unchanged
    assert versions_on_disk(model_dir, "m") == ["1"]  # no half-written version
    time.sleep(1.5)  # longer than the worker's storage retry: the queued job still waits for the disk
    assert service.http.get(f"/jobs/{queued}").json()["status"] == "queued"
    assert service.http.get("/health/ready").json() == {"status": "jobs_unavailable"}

    filler.unlink()
    deadline = time.monotonic() + 10
    while service.http.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.1)
    assert job_until(service, queued, {"succeeded", "failed"})["status"] == "succeeded"
    again = service.train("m", **TINY)
    assert again["version"] == 3
    assert service.http.get("/models/m").json()["versions"] == [1, 2, 3]
    on_disk = json.loads((model_dir / ".jobs" / f"{running}.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"]["code"] == "insufficient_storage"
    assert service.process.poll() is None
    assert "Traceback" not in service.log_path.read_text()
