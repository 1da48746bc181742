"""The ASGI application: ``create_app`` wires settings, the model index and registry, jobs and routes together."""

import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp

from models.serving.batching import BatchScheduler
from models.serving.predictor import Predictor
from models.serving.session_store import open_session_store
from models.serving.session_service import SessionService
from models.serving.model_index import ModelIndex
from models.serving.registry import ModelRegistry
from models.training.job_queue import InProcessJobs, JobOrder
from models.training.redis_jobs import RedisJobQueue
from service.api import catalog, compare, docs, health, jobs, models, sessions, stream, ui
from service.config import Settings, get_settings
from service.deps import ReadAccess
from service.errors import install_error_handlers
from service.fastpath import FastPath
from service.job_plans import plan_job
from service.limits import BodySizeLimit
from service.protocols.kserve_v2 import routes as kserve_v2
from service.protocols.kserve_v2.dataplane import V2DataPlane
from service.protocols.kserve_v2.grpc_server import GrpcServer
from service.protocols.tfserving import routes as tfserving
from service.schemas import ErrorResponse, TrainRequest
from service.metrics import Metrics, MetricsMiddleware
from service.worker import run_job

log = logging.getLogger(__name__)

DEMO_MODEL = "demo"
DEMO_EPOCHS = 15


def _ensure_demo_model(index: ModelIndex, jobs: InProcessJobs | RedisJobQueue, settings: Settings) -> None:
    """Train a small model at first start so a new user's first ``/predict`` works."""
    if DEMO_MODEL in index.names():
        return
    epochs = min(DEMO_EPOCHS, settings.max_epochs)
    order = JobOrder("train", DEMO_MODEL, TrainRequest(architecture="lstm", dataset="noisy_trend", epochs=epochs))
    if isinstance(jobs, RedisJobQueue):
        # A worker trains it. Replicas starting together queue it once, and none waits: readiness must not
        # depend on a worker being up.
        log.info("Queueing the '%s' model (lstm on noisy_trend) for first use", DEMO_MODEL)
        jobs.enqueue_once(order, claim=DEMO_MODEL)
        return
    log.info("Training the '%s' model (lstm on noisy_trend) for first use", DEMO_MODEL)
    job = jobs.wait(jobs.enqueue(order).job_id)
    log.info("Demo model: %s", job.status)


def _job_backend(settings: Settings, index: ModelIndex) -> InProcessJobs | RedisJobQueue:
    """Jobs on this process's thread (default), or on the Redis queue that workers serve (``JOB_QUEUE``)."""
    planner = functools.partial(plan_job, index=index, settings=settings)
    folder = settings.model_dir / ".jobs"
    if settings.job_queue is None:
        return InProcessJobs(folder, settings.max_queued_jobs, planner)
    return RedisJobQueue(
        settings.job_queue,
        settings.session_key_prefix,
        folder,
        settings.max_queued_jobs,
        planner,
        task=run_job,
        heartbeat_timeout_s=settings.job_heartbeat_timeout_s,
    )


class ServiceApp(FastAPI):
    """FastAPI with the fast path (``FAST_PATH``) in front of its whole middleware stack.

    A middleware added with ``add_middleware`` runs inside Starlette's error middleware and every other layer;
    each wrapped the request's ``send`` again for the two hottest routes, which answer themselves.
    """

    def __init__(self, *, fast_path: bool, **kwargs: Any) -> None:
        self.fast_path = fast_path
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        """The usual stack, behind ``FastPath`` when it is on."""
        stack = super().build_middleware_stack()
        return FastPath(stack) if self.fast_path else stack


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; everything stateful is created in its lifespan and reached through ``Depends``."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        index = ModelIndex(settings.model_dir, settings.model_sync_interval_s)
        registry = ModelRegistry(index, settings.max_loaded_versions)
        jobs = _job_backend(settings, index)
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.registry = registry
        app.state.jobs = jobs
        await anyio.to_thread.run_sync(index.open)
        await anyio.to_thread.run_sync(jobs.open)
        if settings.demo_model:
            await anyio.to_thread.run_sync(_ensure_demo_model, index, jobs, settings)
        await registry.open()
        batcher = BatchScheduler(
            settings.batch_max_size,
            settings.batch_timeout_us / 1e6,
            settings.batch_threads,
            inline_max_cost=settings.batch_inline_max_values,
            on_batch=metrics.batch,
        )
        app.state.predictor = Predictor(
            registry, batcher, settings.max_sequences_per_request, settings.max_padded_values
        )
        app.state.sessions = SessionService(
            open_session_store(
                settings.session_store,
                settings.session_key_prefix,
                lock_ttl_s=settings.session_lock_ttl_s,
                lock_wait_s=settings.session_lock_wait_s,
                timeout_s=settings.session_store_timeout_s,
                on_error=metrics.store_error,
            ),
            registry,
            batcher,
            default_ttl_s=settings.session_ttl_s,
            max_sessions=settings.max_sessions,
            events=metrics.session_events(),
        )
        app.state.v2 = V2DataPlane(registry, app.state.predictor, app.state.sessions, metrics, app.version)
        grpc_server = GrpcServer(app.state.v2, settings, metrics) if settings.grpc_port else None
        # Most of what is alive now (TensorFlow, Keras, the first loaded models) lives as long as the process; moving it
        # out of the collector's reach keeps full collections short: they caused p99 spikes of 100-200 ms
        # at 32 connections (bench/). Collect first so no garbage is frozen with it.
        gc.collect()
        gc.freeze()
        try:
            if grpc_server is not None:
                await grpc_server.start()
            async with anyio.create_task_group() as background:
                background.start_soon(app.state.sessions.reap_forever, settings.session_reap_interval_s)
                yield
                background.cancel_scope.cancel()
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            batcher.close()
            await app.state.sessions.store.close()
            await anyio.to_thread.run_sync(jobs.close)

    app = ServiceApp(
        fast_path=settings.fast_path,
        title="lstm-serve",
        version="0.1.0",
        summary="Train, compare and serve five Keras LSTM architectures for binary sequence classification.",
        lifespan=lifespan,
        telemetry=None if settings.telemetry else {"tracing": False, "metrics": False, "logs": False},
        # service.api.docs serves these behind the read-access check, from installed assets (no CDN): FastAPI's
        # own (and FastAPIOffline's) are routes no router dependency reaches, open even under API_KEY_ALL.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(health.router)
    app.include_router(health.metrics_router, dependencies=[ReadAccess])
    app.include_router(docs.router, dependencies=[ReadAccess])
    app.include_router(ui.router, include_in_schema=False, dependencies=[ReadAccess])
    app.include_router(kserve_v2.health_router)
    # Any native route may answer 401 (API_KEY, API_KEY_ALL) and 413 (MAX_BODY_BYTES) in the error format.
    guarded = {401: {"model": ErrorResponse}, 413: {"model": ErrorResponse}}
    for router in (catalog.router, models.router, jobs.router, sessions.router, compare.router):
        app.include_router(router, dependencies=[ReadAccess], responses=guarded)
    # Streams check the key themselves: a WebSocket refused with a close code says why, and browsers send it
    # as a subprotocol (service.auth.authorization_of).
    app.include_router(stream.router)
    for router in (tfserving.router, kserve_v2.router):
        app.include_router(router, dependencies=[ReadAccess])
    return app


app = create_app()
