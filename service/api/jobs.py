"""Background jobs: progress, results and cancellation."""

from dataclasses import asdict

from fastapi import APIRouter

from service.deps import JobsDep, WriteAccess
from service.schemas import ErrorResponse, JobPublic

router = APIRouter(tags=["jobs"], responses={404: {"model": ErrorResponse}})


@router.get("/jobs")
async def list_jobs(jobs: JobsDep) -> list[JobPublic]:
    """Every job this replica knows, oldest first."""
    return [JobPublic(**asdict(job)) for job in jobs.list()]


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, jobs: JobsDep) -> JobPublic:
    """A job's status, epoch, per-epoch history and result."""
    return JobPublic(**asdict(jobs.get(job_id)))


@router.delete("/jobs/{job_id}", dependencies=[WriteAccess], responses={409: {"model": ErrorResponse}})
def cancel_job(job_id: str, jobs: JobsDep) -> JobPublic:
    """Cancel a queued or running job; a running one stops after its current batch."""
    return JobPublic(**asdict(jobs.cancel(job_id)))
