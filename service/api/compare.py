"""Comparisons: which architecture fits my data?"""

from fastapi import APIRouter
from fastapi.responses import FileResponse

from models.training.comparison import plan_comparison
from models.errors import InvalidInput, ReportNotReady
from service.deps import JobsDep, SettingsDep, StoreDep, WriteAccess
from service.schemas import CompareRequest, ErrorResponse, JobAccepted

REPORT_PNG = "report.png"

router = APIRouter(tags=["compare"], responses={422: {"model": ErrorResponse}})


@router.post("/compare", status_code=202, dependencies=[WriteAccess], responses={429: {"model": ErrorResponse}})
def compare(body: CompareRequest, jobs: JobsDep, store: StoreDep, settings: SettingsDep) -> JobAccepted:
    """Train several architectures on the same data; the job's report ranks them and explains why."""
    if body.architectures and len(set(body.architectures)) != len(body.architectures):
        raise InvalidInput("List each architecture once.", field="architectures", got=body.architectures)
    work, total_epochs = plan_comparison(
        store,
        lambda job_id: jobs.artifact_path(job_id, REPORT_PNG),
        architectures=body.architectures,
        overrides=body.params.model_dump(exclude_none=True),
        sequences=body.data.sequences if body.data else None,
        labels=body.data.labels if body.data else None,
        dataset=body.dataset,
        settings=body.fit_settings(settings),
        keep_best_as=body.keep_best_as,
    )
    job = jobs.submit("compare", body.keep_best_as, total_epochs, work)
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
