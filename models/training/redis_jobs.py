"""Jobs on a Redis queue (``JOB_QUEUE``): API replicas queue them, ``lstm-serve worker`` processes run them.

Delivery is rq's (https://python-rq.org): a Redis list per queue, one job at a time per worker, workers
that start, stop and scale on their own. What the API shows is this module's job record, a JSON value in
Redis that any replica reads, so every replica lists every job, follows its per-epoch progress and cancels
it. Keys (under the service's key prefix ``P``):

- ``P job:<id>``: the record (``Job`` as JSON); ``P job:<id>:order``: the request the worker plans from;
- ``P jobs``: every job id, scored by creation time; ``P jobs:queued``: the ids still waiting (the cap);
- ``P job:<id>:alive``: the running worker's heartbeat (expires after ``heartbeat_timeout_s``);
- ``P job:<id>:cancel``: set by a cancel; the worker stops the job at its next training batch.

Every change of a record is a transaction (WATCH) that checks the status it changes from, so a cancel,
a worker and a replica finding a dead worker never overwrite each other. A worker killed outright stops
beating; the next read of its job marks it failed with ``worker_lost``. Jobs are not retried: a job
writes its version only at its very end, and a retry could not tell whether that write happened, so a
lost job is reported and left for the client to submit again. (rq would notice the abandoned job too,
but only after its heartbeat TTL of at least 60 s and a maintenance pass.)
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import redis
import rq

from models.errors import CapacityExceeded, JobNotCancellable, JobNotFound
from models.training.job_queue import ArtifactPath, JobOrder, Planner
from models.training.jobs import FINISHED, Job, JobContext, _now, _this_process, perform

log = logging.getLogger(__name__)

#: Cancel flags and order payloads outlive any job; they are dropped a day after it finished.
_LEFTOVER_TTL_S = 24 * 3600
WORKER_LOST = {
    "code": "worker_lost",
    "message": "The worker running this job stopped (killed or lost) before it finished; submit it again.",
}
INTERRUPTED = {"code": "interrupted", "message": "The worker was stopped before this job finished; submit it again."}
#: rq keeps failures of the task itself (never of a job: those are in the record) this long, for debugging.
_RQ_FAILURE_TTL_S = 7 * 24 * 3600


def queue_name(prefix: str) -> str:
    """The rq queue API replicas put jobs on and workers take them from."""
    return f"{prefix}training"


def _artifact_path(folder: Path) -> ArtifactPath:
    return lambda job_id, name: folder / f"{job_id}.{name}"


class RedisJobRecords:
    """Job records in Redis, changed only by status-checked transactions."""

    def __init__(self, client: redis.Redis, prefix: str, heartbeat_timeout_s: float) -> None:
        self.redis = client
        self.prefix = prefix
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._index = f"{prefix}jobs"
        self._queued = f"{prefix}jobs:queued"

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self.prefix}job:{job_id}{part}"

    def admit(self, job: Job, order: JobOrder, max_queued: int) -> None:
        """Record a queued job unless ``max_queued`` jobs wait already, counted over every replica."""

        def admit(pipe: redis.client.Pipeline) -> None:
            waiting = pipe.scard(self._queued)
            if waiting >= max_queued:
                raise CapacityExceeded(
                    f"{waiting} jobs are already queued; try again when one has started.", limit=max_queued
                )
            pipe.multi()
            pipe.set(self._key(job.job_id), json.dumps(asdict(job)))
            pipe.set(self._key(job.job_id, ":order"), json.dumps(
                {"kind": order.kind, "model": order.model, "request": order.request_json()}
            ))
            pipe.zadd(self._index, {job.job_id: time.time()})
            pipe.sadd(self._queued, job.job_id)

        self.redis.transaction(admit, self._queued)

    def order(self, job_id: str) -> JobOrder:
        """The order a job was queued with (its request still JSON text)."""
        raw = self.redis.get(self._key(job_id, ":order"))
        if raw is None:
            raise JobNotFound(f"No order for job '{job_id}'.", job_id=job_id)
        data = json.loads(raw)
        return JobOrder(kind=data["kind"], model=data["model"], request=data["request"])

    def get(self, job_id: str) -> Job:
        """A job's record; a running job whose worker stopped beating is failed first."""
        raw = self.redis.get(self._key(job_id)) if job_id.isalnum() else None
        if raw is None:
            raise JobNotFound(f"No job with id '{job_id}'.", job_id=job_id)
        return self._reap([_job(raw)])[0]

    def list(self) -> list[Job]:
        """Every record, oldest first."""
        ids = [i.decode() for i in self.redis.zrange(self._index, 0, -1)]
        raws = self.redis.mget([self._key(i) for i in ids]) if ids else []
        return self._reap([_job(raw) for raw in raws if raw is not None])

    def _reap(self, jobs: list[Job]) -> list[Job]:
        running = [job for job in jobs if job.status == "running"]
        if not running:
            return jobs
        pipe = self.redis.pipeline(transaction=False)
        for job in running:
            pipe.exists(self._key(job.job_id, ":alive"))
        dead = {job.job_id for job, alive in zip(running, pipe.execute()) if not alive}
        reaped = []
        for job in jobs:
            if job.job_id in dead:
                failed = self.change(
                    job.job_id, {"running"}, alive_missing=True, status="failed", finished_at=_now(), error=WORKER_LOST
                )
                # None: the worker beat or finished in between; read what it wrote.
                job = failed or _job(self.redis.get(self._key(job.job_id)))
            reaped.append(job)
        return reaped

    def change(self, job_id: str, allowed: set[str], alive_missing: bool = False, **changes: Any) -> Job | None:
        """Apply ``changes`` if the job's status is in ``allowed`` (and, with ``alive_missing``, its worker's
        heartbeat is gone); return the new record, or ``None`` when the job had moved on."""
        key, alive = self._key(job_id), self._key(job_id, ":alive")
        changed: list[Job] = []

        def apply(pipe: redis.client.Pipeline) -> None:
            raw = pipe.get(key)
            if raw is None or _job(raw).status not in allowed or (alive_missing and pipe.exists(alive)):
                return
            job = replace(_job(raw), **changes)
            pipe.multi()
            pipe.set(key, json.dumps(asdict(job)))
            if job.status != "queued":
                pipe.srem(self._queued, job_id)
            if job.status == "running" and "started_at" in changes:
                pipe.set(alive, job.owner, px=self._heartbeat_ms)
            if job.status in FINISHED:
                pipe.delete(alive)
                pipe.expire(self._key(job_id, ":cancel"), _LEFTOVER_TTL_S)
                pipe.expire(self._key(job_id, ":order"), _LEFTOVER_TTL_S)
            changed.append(job)

        self.redis.transaction(apply, key, alive)
        return changed[0] if changed else None

    @property
    def _heartbeat_ms(self) -> int:
        return int(self.heartbeat_timeout_s * 1000)

    def update_running(self, job_id: str, **changes: Any) -> None:
        """Progress from the worker (epoch, history, report, version); ignored once the job has finished."""
        self.change(job_id, {"running"}, **changes)

    def request_cancel(self, job_id: str) -> None:
        self.redis.set(self._key(job_id, ":cancel"), b"1", ex=_LEFTOVER_TTL_S)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._key(job_id, ":cancel")))

    def beat(self, job_id: str, owner: str) -> bool:
        """Renew the heartbeat of a running job; True when a cancel was requested."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._key(job_id, ":alive"), owner, px=self._heartbeat_ms)
        pipe.exists(self._key(job_id, ":cancel"))
        return bool(pipe.execute()[1])


def _job(raw: bytes) -> Job:
    return Job(**json.loads(raw))


class RedisJobQueue:
    """The API side: validate and queue orders, read and cancel records. Implements ``JobQueue``."""

    def __init__(
        self,
        url: str,
        prefix: str,
        folder: Path,
        max_queued: int,
        planner: Planner,
        task: Callable[[str], None],
        heartbeat_timeout_s: float,
    ) -> None:
        client = redis.Redis.from_url(url)
        self.records = RedisJobRecords(client, prefix, heartbeat_timeout_s)
        self.queue = rq.Queue(queue_name(prefix), connection=client)
        self.folder = folder
        self.max_queued = max_queued
        self._planner = planner
        self._task = task
        self.artifact_path = _artifact_path(folder)

    def open(self) -> None:
        """Check Redis answers (a wrong URL fails the start-up, not the first job)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.records.redis.ping()

    def close(self, timeout: float = 30.0) -> None:
        """Jobs belong to the workers: nothing to stop here."""
        self.records.redis.close()

    @property
    def ready(self) -> bool:
        """Always: jobs run on workers, which have their own health; a Redis outage is answered per request."""
        return True

    def enqueue(self, order: JobOrder) -> Job:
        """Validate the order here (a mistake is a 4xx now, not a failed job later), record it, queue it."""
        plan = self._planner(order, self.artifact_path)
        job = Job(job_id=secrets.token_hex(8), kind=order.kind, model=order.model, epochs=plan.epochs)
        self.records.admit(job, order, self.max_queued)
        try:
            self.queue.enqueue_call(
                self._task, args=(job.job_id,), job_id=job.job_id,
                timeout=-1, result_ttl=0, failure_ttl=_RQ_FAILURE_TTL_S,
            )
        except Exception:
            # Recorded but not queued: fail the record so it does not hold a place under the cap forever.
            self.records.change(job.job_id, {"queued"}, status="failed", finished_at=_now(),
                                error={"code": "queue_unavailable", "message": "The job could not be queued."})
            raise
        return job

    def enqueue_once(self, order: JobOrder, claim: str, claim_ttl_s: int = 3600) -> Job | None:
        """Queue the order unless another replica claimed ``claim`` in the last ``claim_ttl_s`` (the demo
        model at first start: replicas starting together queue it once)."""
        if not self.records.redis.set(f"{self.records.prefix}claim:{claim}", b"1", nx=True, ex=claim_ttl_s):
            return None
        return self.enqueue(order)

    def get(self, job_id: str) -> Job:
        return self.records.get(job_id)

    def list(self) -> list[Job]:
        return self.records.list()

    def cancel(self, job_id: str) -> Job:
        """A queued job ends at once; a running one at the next batch of whichever worker runs it."""
        job = self.records.get(job_id)
        if job.status in FINISHED:
            raise JobNotCancellable(f"Job '{job_id}' has already {job.status}.", status=job.status)
        if self.records.change(job_id, {"queued"}, status="cancelled", finished_at=_now()) is None:
            self.records.request_cancel(job_id)
        return self.records.get(job_id)


class QueuedJobRunner:
    """The worker side: runs one queued job at a time, beating its heartbeat and watching for a cancel."""

    def __init__(self, records: RedisJobRecords, planner: Planner, folder: Path) -> None:
        self.records = records
        self._planner = planner
        self.artifact_path = _artifact_path(folder)
        self.owner = _this_process()
        self._current: JobContext | None = None
        self._interrupted = threading.Event()
        folder.mkdir(parents=True, exist_ok=True)

    def interrupt(self) -> None:
        """The worker is stopping (SIGTERM): end the running job at its next batch, as ``interrupted``."""
        self._interrupted.set()
        if self._current is not None:
            self._current.cancel_requested.set()

    def run(self, job_id: str) -> None:
        """Run a queued job to its end; a job cancelled while it waited is skipped."""
        order = self.records.order(job_id)
        if self.records.change(job_id, {"queued"}, status="running", started_at=_now(), owner=self.owner) is None:
            log.info("Job %s is no longer queued; skipped", job_id)
            return
        context = JobContext(self.records.update_running, job_id)
        self._current = context
        stop_beating = threading.Event()
        beating = threading.Thread(target=self._beat, args=(context, stop_beating), name="job-heartbeat", daemon=True)
        beating.start()
        try:
            outcome = perform(lambda ctx: self._planner(order, self.artifact_path).work(ctx), context)
        finally:
            stop_beating.set()
            beating.join()
            self._current = None
        if outcome["status"] == "cancelled" and self._interrupted.is_set() and not self.records.cancel_requested(job_id):
            outcome = {**outcome, "status": "failed", "error": INTERRUPTED}
        self.records.change(job_id, {"running"}, **outcome)

    def _beat(self, context: JobContext, stop: threading.Event) -> None:
        """Every fifth of the timeout: renew the heartbeat and pass on a cancel from any replica."""
        while not stop.wait(self.records.heartbeat_timeout_s / 5):
            try:
                if self.records.beat(context.job_id, self.owner):
                    context.cancel_requested.set()
            except redis.RedisError:
                log.warning("Could not renew the heartbeat of job %s", context.job_id, exc_info=True)
