"""The one interface of job backends: where training and comparison jobs wait, run and keep their records.

Two backends implement it. ``InProcessJobs`` (the default) runs jobs on a thread of the serving process,
exactly as ``JobManager`` does. ``models.training.redis_jobs.RedisJobQueue`` (with ``JOB_QUEUE``) puts them
on a Redis queue that ``lstm-serve worker`` processes serve. Routes hand either one a ``JobOrder``: the
request as data, never a closure, so a worker in another process can validate it again and plan the same
work from it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from models.training.jobs import Job, JobManager, Work

JobKind = Literal["train", "compare"]


@dataclass(frozen=True)
class JobOrder:
    """What to run: the job kind, the model it writes (if any) and the request body.

    ``request`` is the validated request model as a route received it, or its JSON text as a worker reads
    it back from the queue (the planner validates that again).
    """

    kind: JobKind
    model: str | None
    request: Any

    def request_json(self) -> str:
        """The request as JSON text, for the queue."""
        return self.request if isinstance(self.request, str) else self.request.model_dump_json()


@dataclass(frozen=True)
class Plan:
    """A validated order: the work to run and how many epochs it trains in all (the job's ``epochs``)."""

    work: Work
    epochs: int


#: ``(job_id, name) -> path`` of a file a job produces beside its record (a comparison's plot).
ArtifactPath = Callable[[str, str], Path]
#: Validates an order (raising ``InvalidInput`` for anything that would fail later) and plans its work.
Planner = Callable[[JobOrder, ArtifactPath], Plan]


class JobQueue(Protocol):
    """What the routes need of a job backend."""

    def enqueue(self, order: JobOrder) -> Job:
        """Validate and queue an order; ``CapacityExceeded`` when ``MAX_QUEUED_JOBS`` are already waiting."""
        ...

    def get(self, job_id: str) -> Job:
        """A job's record; ``JobNotFound`` if there is none."""
        ...

    def list(self) -> list[Job]:
        """Every job's record, oldest first."""
        ...

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or a running one at its next training batch."""
        ...

    def artifact_path(self, job_id: str, name: str) -> Path:
        """Where a job keeps a file it produces."""
        ...

    @property
    def ready(self) -> bool:
        """Whether jobs can be queued and run now (``/health/ready`` answers 503 while they cannot)."""
        ...

    def open(self) -> None:
        """Start (reload records, start the in-process worker, or connect)."""
        ...

    def close(self, timeout: float = 30.0) -> None:
        """Stop; an in-process backend cancels its queued and running jobs."""
        ...


class InProcessJobs(JobManager):
    """The embedded default: orders are planned here and run on this process's job thread."""

    def __init__(self, folder: Path, max_queued: int, planner: Planner) -> None:
        super().__init__(folder, max_queued)
        self._planner = planner

    def enqueue(self, order: JobOrder) -> Job:
        """Plan the order (a mistake raises before anything is queued) and queue its work."""
        plan = self._planner(order, self.artifact_path)
        return self.submit(order.kind, order.model, plan.epochs, plan.work)
