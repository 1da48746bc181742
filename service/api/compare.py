"""Comparisons: which architecture fits my data?"""

from fastapi import APIRouter
from fastapi.responses import FileResponse

from models.errors import ReportNotReady
from models.training.job_queue import JobOrder
from service.deps import JobsDep, WriteAccess
from service.job_plans import REPORT_PNG
from service.schemas import CompareRequest, ErrorResponse, JobAccepted

router = APIRouter(tags=["compare"], responses={422: {"model": ErrorResponse}})


@router.post(
    "/compare",
    status_code=202,
    dependencies=[WriteAccess],
    responses={429: {"model": ErrorResponse}, 507: {"model": ErrorResponse}},
)
def compare(body: CompareRequest, jobs: JobsDep) -> JobAccepted:
    """Train several architectures on the same data; the job's report ranks them and explains why."""
    job = jobs.enqueue(JobOrder("compare", body.keep_best_as, body))
    return JobAccepted(job_id=job.job_id, model=body.keep_best_as, status=job.status)


@router.get(
    "/jobs/{job_id}/report.png",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
)
def comparison_plot(job_id: str, jobs: JobsDep) -> FileResponse:
    """Learning curves of every architecture in a finished comparison, side by side."""
    job = jobs.get(job_id)
    path = jobs.artifact_path(job_id, REPORT_PNG)
    if job.kind != "compare" or job.status != "succeeded" or not path.exists():
        raise ReportNotReady(
            f"Job '{job_id}' has no plot: it is a {job.kind} job with status {job.status}.",
            kind=job.kind,
            status=job.status,
        )
    return FileResponse(path, media_type="image/png")
