"""Liveness, readiness (always open) and Prometheus metrics (guarded under ``API_KEY_ALL``)."""

from collections import Counter

import anyio.from_thread
from fastapi import APIRouter, Response

from models.errors import Unavailable
from service.deps import IndexDep, JobsDep, MetricsDep, RegistryDep, SessionsDep
from service.schemas import HealthStatus

router = APIRouter(tags=["operations"])
#: ``/metrics`` names every model: unlike the probes it needs the key under ``API_KEY_ALL`` (the app adds the check).
metrics_router = APIRouter(tags=["operations"])


@router.get("/health/live")
async def live() -> HealthStatus:
    """The process is up."""
    return HealthStatus(status="ok")


@router.get("/health/ready", responses={503: {"model": HealthStatus}})
def ready(registry: RegistryDep, jobs: JobsDep, response: Response) -> HealthStatus:
    """Ready once each model's latest version is loaded, while the job worker can run jobs (its records can be written)."""
    if not registry.ready:
        response.status_code = 503
        return HealthStatus(status="loading")
    # A plain def: when records could not be written, ``jobs.ready`` tries the disk again (a small write).
    if not jobs.ready:
        response.status_code = 503
        return HealthStatus(status="jobs_unavailable")
    return HealthStatus(status="ok")


@metrics_router.get("/metrics", response_class=Response)
def metrics(metrics: MetricsDep, index: IndexDep, jobs: JobsDep, sessions: SessionsDep) -> Response:
    """Prometheus text format."""
    metrics.models.set(len(index.names()))
    # Counted when scraped: the store holds every replica's sessions.
    try:
        metrics.set_live_sessions(anyio.from_thread.run(sessions.live_by_model))
    except Unavailable:
        pass  # Redis down: the gauge keeps its last values, lstm_serve_session_store_errors_total counts it

    counts = Counter(job.status for job in jobs.list())
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        metrics.jobs.labels(status).set(counts.get(status, 0))
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
