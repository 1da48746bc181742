"""Background jobs (training, comparisons): one worker thread, a bounded queue, records on disk.

Training is CPU-bound and these machines have two cores, so jobs run one at a time off the event loop;
predictions never wait for them. Each record is rewritten atomically at every change, so ``GET /jobs``
shows per-epoch progress and a restart still knows every job. Records name the process that runs them:
replicas sharing the folder read each other's jobs, and a restart marks failed only the unfinished jobs
of a process that is gone, never those another live replica is running.

Storage faults are errors, never deaths: a record that cannot be written (disk full, any ``OSError``)
stays current in memory and is written again once the disk takes writes; a job whose work or record
fails on storage ends ``failed`` with the code ``insufficient_storage``; while records cannot be written
the worker starts no job (queued ones wait, then run once space is back) and ``ready`` is false. The
worker thread is supervised: if its loop ever raises, the job it held is failed and the loop starts again.
"""

import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from models.errors import (
    CapacityExceeded,
    InsufficientStorage,
    JobNotCancellable,
    JobNotFound,
    LstmServeError,
    storage_fault,
)

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _empty_history() -> dict[str, list[float]]:
    return {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}


@dataclass
class Job:
    """The public record of a job, as ``GET /jobs/{id}`` shows it."""

    job_id: str
    kind: str
    model: str | None
    epochs: int
    status: JobStatus = "queued"
    epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=_empty_history)
    version: int | None = None
    error: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    owner: str = ""
    #: What the result must be read with, each said once (a fit that had nothing to validate on).
    notes: list[str] = field(default_factory=list)


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_is_gone(owner: str) -> bool:
    """True when ``owner`` was a process on this host that no longer runs (or was a previous us)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return host == ""
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class JobCancelled(Exception):
    """Raised inside a job's work when it notices its cancellation; the job ends ``cancelled``."""


class JobContext:
    """What a running job's work may do: report progress, store results, check for cancellation.

    ``record(job_id, **changes)`` writes to wherever the job's record lives (this process's ``JobManager``,
    or Redis for a job run by a worker); if it raises (``InsufficientStorage`` when a record cannot be
    written), the job's work stops there and the job fails with that error.
    """

    def __init__(self, record: Callable[..., None], job_id: str) -> None:
        self._record = record
        self.job_id = job_id
        self.cancel_requested = threading.Event()

    def update(self, **changes: Any) -> None:
        """Change fields of the job record (``epoch``, ``history``, ``version``, ``report``, ``notes``)."""
        self._record(self.job_id, **changes)

    def check_cancelled(self) -> None:
        """Raise ``JobCancelled`` if a cancel was requested."""
        if self.cancel_requested.is_set():
            raise JobCancelled


Work = Callable[[JobContext], None]


def perform(work: Work, context: JobContext) -> dict[str, Any]:
    """Run a job's work; return the fields that finish its record (status, finished_at, any error)."""
    try:
        work(context)
    except JobCancelled:
        return {"status": "cancelled", "finished_at": _now()}
    except LstmServeError as exc:
        return _failed(exc)
    except Exception as exc:  # noqa: BLE001 - a job's failure is reported in its record, not raised
        fault = storage_fault(exc)
        if fault is not None:  # a full disk while training or saving: the job's failure, with a code
            log.warning("Job %s failed on storage: %s", context.job_id, fault)
            return _failed(InsufficientStorage.from_os_error(fault))
        log.exception("Job %s failed", context.job_id)
        error = {"code": "training_failed", "message": f"{type(exc).__name__}: {exc}"}
        return {"status": "failed", "finished_at": _now(), "error": error}
    return {"status": "succeeded", "finished_at": _now()}


def _failed(exc: LstmServeError) -> dict[str, Any]:
    return {"status": "failed", "finished_at": _now(), "error": {"code": exc.code, "message": exc.message, "details": exc.details}}


#: How long the worker waits before trying the disk again while job records cannot be written.
STORAGE_RETRY_S = 1.0
#: Pause before the supervised worker loop starts again after it raised (keeps a persistent bug from spinning).
RESTART_PAUSE_S = 0.5


class JobManager:
    """Queues jobs, runs them one at a time on a worker thread, and keeps their records."""

    def __init__(self, folder: Path, max_queued: int, storage_retry_s: float = STORAGE_RETRY_S) -> None:
        self.folder = folder
        self.max_queued = max_queued
        self.storage_retry_s = storage_retry_s
        #: How often the worker loop died and was started again (a bug if ever non-zero; shown in logs).
        self.restarts = 0
        self._jobs: dict[str, Job] = {}
        self._contexts: dict[str, JobContext] = {}
        self._done = threading.Condition()
        self._queue: queue.Queue[tuple[str, Work] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._closing = threading.Event()
        #: Ids whose newest record is only in memory because writing it failed.
        self._unsaved: set[str] = set()
        #: False from a failed write until a write works again.
        self._storage_ok = True
        self._current: str | None = None

    def open(self) -> None:
        """Reload job records; a job a previous process left unfinished is marked failed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in self.folder.glob("*.json"):
            try:
                job = Job(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                log.warning("Ignoring unreadable job record %s", path)
                continue
            if job.status not in FINISHED and _owner_is_gone(job.owner):
                job = replace(
                    job,
                    status="failed",
                    finished_at=_now(),
                    error={"code": "interrupted", "message": "The server stopped before this job finished."},
                )
                self._save(job)
            self._jobs[job.job_id] = job
        self._worker = threading.Thread(target=self._supervise, name="job-worker", daemon=True)
        self._worker.start()

    @property
    def ready(self) -> bool:
        """True while the worker runs and job records can be written; after a failed write it tries the disk again."""
        if not self._storage_ok:
            self._probe_storage()
        return self._worker is not None and self._worker.is_alive() and self._storage_ok

    def _probe_storage(self) -> None:
        """Write every record kept only in memory, or a small probe file when there is none."""
        if self._unsaved:
            self._flush_unsaved()
            return
        probe = self.folder / ".probe"
        try:
            self._write_file(probe, "ok")
            probe.unlink()
        except OSError:
            return
        self._storage_ok = True

    def close(self, timeout: float = 30.0) -> None:
        """Cancel queued and running jobs and stop the worker."""
        self._closing.set()
        for context in list(self._contexts.values()):
            context.cancel_requested.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout)

    def submit(self, kind: str, model: str | None, epochs: int, work: Work) -> Job:
        """Queue ``work``; raises ``CapacityExceeded`` when ``max_queued`` jobs are already waiting, and
        ``InsufficientStorage`` (leaving no job behind) when its record cannot be written."""
        with self._done:
            waiting = sum(1 for job in self._jobs.values() if job.status == "queued")
            if waiting >= self.max_queued:
                raise CapacityExceeded(
                    f"{waiting} jobs are already queued; try again when one has started.",
                    limit=self.max_queued,
                )
            job = Job(job_id=secrets.token_hex(8), kind=kind, model=model, epochs=epochs, owner=_this_process())
            try:
                self._write(job)
            except OSError as exc:
                self._storage_ok = False
                raise InsufficientStorage.from_os_error(exc) from exc
            self._storage_ok = True
            self._jobs[job.job_id] = job
            self._contexts[job.job_id] = JobContext(self._record_progress, job.job_id)
        self._flush_unsaved()  # a write just worked: records that could not be written before can be now
        self._queue.put((job.job_id, work))
        return replace(job)

    def get(self, job_id: str) -> Job:
        """A snapshot of a job's record."""
        with self._done:
            job = self._jobs.get(job_id) or self._read_foreign(job_id)
            return replace(job, history={k: list(v) for k, v in job.history.items()})

    def _read_foreign(self, job_id: str) -> Job:
        """A job another replica sharing the folder runs or ran."""
        path = self.folder / f"{job_id}.json"
        if not job_id.isalnum() or not path.exists():
            raise JobNotFound(f"No job with id '{job_id}'.", job_id=job_id)
        try:
            return Job(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            raise JobNotFound(f"No readable job with id '{job_id}'.", job_id=job_id) from None

    def artifact_path(self, job_id: str, name: str) -> Path:
        """Where a job keeps a file it produces (e.g. a comparison's plot), beside its record."""
        return self.folder / f"{job_id}.{name}"

    def list(self) -> list[Job]:
        """Snapshots of every known job, oldest first."""
        with self._done:
            return sorted((replace(job) for job in self._jobs.values()), key=lambda job: job.created_at)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or a running one at its next training batch."""
        job = self.get(job_id)
        if job.status in FINISHED:
            raise JobNotCancellable(f"Job '{job_id}' has already {job.status}.", status=job.status)
        if job_id not in self._jobs:
            raise JobNotCancellable(
                f"Job '{job_id}' runs on another replica ({job.owner}); cancel it there.", owner=job.owner
            )
        context = self._contexts.get(job_id)
        if context is not None:
            context.cancel_requested.set()
        if job.status == "queued":
            self._update(job_id, status="cancelled", finished_at=_now())
        return self.get(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has finished (or ``timeout`` passes); return its record."""
        with self._done:
            self._done.wait_for(lambda: self._jobs[job_id].status in FINISHED, timeout)
        return self.get(job_id)

    def _update(self, job_id: str, **changes: Any) -> OSError | None:
        """Change a record in memory, then on disk; a failed write leaves it marked unsaved and is returned."""
        with self._done:
            job = replace(self._jobs[job_id], **changes)
            self._jobs[job_id] = job
            self._done.notify_all()
            return self._save(job)

    def _record_progress(self, job_id: str, **changes: Any) -> None:
        """A running job's own update: one that cannot be written stops the job (``InsufficientStorage``)
        instead of letting it train on while nothing can be saved."""
        fault = self._update(job_id, **changes)
        if fault is not None:
            raise InsufficientStorage.from_os_error(fault)

    def _save(self, job: Job) -> OSError | None:
        try:
            self._write(job)
        except OSError as exc:
            if job.job_id not in self._unsaved:
                log.warning("Job record %s could not be written (%s); kept in memory until the disk takes it", job.job_id, exc)
            self._unsaved.add(job.job_id)
            self._storage_ok = False
            return exc
        self._unsaved.discard(job.job_id)
        self._storage_ok = not self._unsaved
        return None

    def _flush_unsaved(self) -> None:
        """Write again every record that could not be written; stops at the first failure."""
        with self._done:
            for job_id in sorted(self._unsaved):
                if self._save(self._jobs[job_id]) is not None:
                    return

    def _write(self, job: Job) -> None:
        self._write_file(self.folder / f"{job.job_id}.json", json.dumps(asdict(job)))

    @staticmethod
    def _write_file(path: Path, text: str) -> None:
        """Write ``text`` to ``path`` atomically (a temporary file, then a rename); leave no temporary behind."""
        temp = path.with_name(f".{path.name}.tmp")
        try:
            temp.write_text(text)
            os.replace(temp, path)
        except OSError:
            temp.unlink(missing_ok=True)
            raise

    def _supervise(self) -> None:
        """The worker thread: runs the job loop, and starts it again should it ever raise."""
        while not self._closing.is_set():
            try:
                self._run()
                return
            except Exception:  # noqa: BLE001 - the worker must outlive any bug in one job's bookkeeping
                self.restarts += 1
                log.exception("The job worker loop failed; starting it again (restart %d)", self.restarts)
                if self._current is not None:
                    error = {"code": "internal_error", "message": "The job worker failed while running this job."}
                    self._finish(self._current, status="failed", finished_at=_now(), error=error)
                time.sleep(RESTART_PAUSE_S)

    def _wait_for_storage(self) -> bool:
        """Before a job starts: wait until records can be written again (False if closing meanwhile)."""
        while not self._storage_ok:
            self._probe_storage()
            if not self._storage_ok and self._closing.wait(self.storage_retry_s):
                return False
        return True

    def _finish(self, job_id: str, **outcome: Any) -> None:
        self._current = None
        self._contexts.pop(job_id, None)
        self._update(job_id, **outcome)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            job_id, work = item
            if self.get(job_id).status != "queued" or not self._wait_for_storage():
                continue
            if self.get(job_id).status != "queued":  # cancelled while waiting for the disk
                continue
            self._current = job_id
            self._update(job_id, status="running", started_at=_now())
            self._finish(job_id, **perform(work, self._contexts[job_id]))
