"""The job manager under storage faults and bugs, in milliseconds: fake work, no TensorFlow.

Record writes are made to fail with ENOSPC by patching ``JobManager._write_file``; the real-disk version of
these promises runs against a real process on a full tmpfs in tests/e2e/test_disk_full.py.
"""

import errno
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.errors import InsufficientStorage
from models.training import jobs as jobs_module
from models.training.jobs import Job, JobContext, JobManager


class Disk:
    """Switches every job-record write between working and failing with ENOSPC."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        real = JobManager._write_file

        def write(path: Path, text: str) -> None:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, text)

        monkeypatch.setattr(JobManager, "_write_file", staticmethod(write))


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    return Disk(monkeypatch)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[JobManager]:
    jobs = JobManager(tmp_path / "jobs", max_queued=2, storage_retry_s=0.02)
    jobs.open()
    yield jobs
    jobs.close(timeout=5)


def nothing(context: JobContext) -> None:
    """Work that succeeds at once."""


def test_a_job_that_cannot_be_recorded_is_refused_and_leaves_nothing(manager: JobManager, disk: Disk, tmp_path: Path) -> None:
    disk.full = True
    for _ in range(3):  # more than max_queued: no phantom job counts against the cap
        with pytest.raises(InsufficientStorage) as refused:
            manager.submit("train", "m", 1, nothing)
        assert refused.value.details["errno"] == "ENOSPC"
    assert manager.list() == []
    assert list((tmp_path / "jobs").iterdir()) == []
    assert not manager.ready

    disk.full = False
    assert manager.ready  # the probe write works again
    job = manager.wait(manager.submit("train", "m", 1, nothing).job_id, timeout=5)
    assert job.status == "succeeded"


def test_work_failing_on_storage_fails_the_job_with_a_code_and_the_worker_lives_on(manager: JobManager) -> None:
    def save_fails(context: JobContext) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:  # as h5py does: its own exception, the OS error as its cause
            raise RuntimeError("Unable to synchronously create dataset") from exc

    job = manager.wait(manager.submit("train", "m", 1, save_fails).job_id, timeout=5)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "insufficient_storage"
    assert job.error["details"] == {"errno": "ENOSPC"}
    assert manager.wait(manager.submit("train", "m", 1, nothing).job_id, timeout=5).status == "succeeded"


def test_a_record_write_failing_mid_job_fails_that_job_and_queued_jobs_wait_for_space(
    manager: JobManager, disk: Disk, tmp_path: Path
) -> None:
    started, release = threading.Event(), threading.Event()

    def epochs(context: JobContext) -> None:
        started.set()
        release.wait(5)
        context.update(epoch=1)  # the record write fails here: the job must stop, not train on

    running = manager.submit("train", "m", 2, epochs).job_id
    queued = manager.submit("train", "m", 1, nothing).job_id
    assert started.wait(5)
    disk.full = True
    release.set()
    job = manager.wait(running, timeout=5)
    assert job.status == "failed" and job.error is not None and job.error["code"] == "insufficient_storage"
    assert job.epoch == 1  # the record is current in memory
    assert manager.wait(queued, timeout=0.3).status == "queued"  # waits for the disk instead of running
    assert not manager.ready

    disk.full = False
    assert manager.wait(queued, timeout=5).status == "succeeded"
    assert manager.ready
    on_disk = Job(**json.loads((tmp_path / "jobs" / f"{running}.json").read_text()))
    assert on_disk.status == "failed" and on_disk.epoch == 1


def test_the_worker_loop_is_restarted_if_it_ever_raises(manager: JobManager, monkeypatch: pytest.MonkeyPatch) -> None:
    real_finish = JobManager._finish
    calls = []

    def finish_once_broken(self: JobManager, job_id: str, **outcome: object) -> None:
        calls.append(outcome["status"])
        if len(calls) == 1:
            raise RuntimeError("a bug in the bookkeeping")
        real_finish(self, job_id, **outcome)

    monkeypatch.setattr(JobManager, "_finish", finish_once_broken)
    monkeypatch.setattr(jobs_module, "RESTART_PAUSE_S", 0.0)
    broken = manager.wait(manager.submit("train", "m", 1, nothing).job_id, timeout=5)
    assert broken.status == "failed" and broken.error is not None and broken.error["code"] == "internal_error"
    assert manager.restarts == 1
    assert manager.wait(manager.submit("train", "m", 1, nothing).job_id, timeout=5).status == "succeeded"
    assert manager.ready
