"""The ASGI application: ``create_app`` wires settings, the model store, jobs and routes together."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from models.serving.batching import BatchScheduler
from models.training.jobs import JobManager
from models.serving.predictor import Predictor
from models.serving.session_store import open_session_store
from models.serving.session_service import SessionService
from models.serving.store import ModelStore
from models.training.fitting import FitSettings, plan_training
from service.api import catalog, compare, docs, health, jobs, kserve, models, sessions, tfserving, ui
from service.config import Settings, get_settings
from service.deps import ReadAccess
from service.errors import install_error_handlers
from service.fastpath import FastPath
from service.limits import BodySizeLimit
from service.schemas import ErrorResponse
from service.metrics import Metrics, MetricsMiddleware

log = logging.getLogger(__name__)

DEMO_MODEL = "demo"
DEMO_EPOCHS = 15


def _ensure_demo_model(store: ModelStore, manager: JobManager) -> None:
    """Train a small model at first start so a new user's first ``/predict`` works."""
    if DEMO_MODEL in store.names():
        return
    log.info("Training the '%s' model (lstm on noisy_trend) for first use", DEMO_MODEL)
    work = plan_training(
        store, DEMO_MODEL, "lstm", {}, sequences=None, labels=None, dataset="noisy_trend",
        settings=FitSettings(epochs=DEMO_EPOCHS),
    )
    job = manager.wait(manager.submit("train", DEMO_MODEL, DEMO_EPOCHS, work).job_id)
    log.info("Demo model: %s", job.status)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; everything stateful is created in its lifespan and reached through ``Depends``."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = ModelStore(settings.model_dir)
        manager = JobManager(settings.model_dir / ".jobs", settings.max_queued_jobs)
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.store = store
        app.state.jobs = manager
        await anyio.to_thread.run_sync(store.open)
        manager.open()
        if settings.demo_model:
            await anyio.to_thread.run_sync(_ensure_demo_model, store, manager)
        batcher = BatchScheduler(settings.batch_max_size, settings.batch_timeout_us / 1e6, settings.batch_threads)
        app.state.predictor = Predictor(
            store, batcher, settings.max_sequences_per_request, settings.max_padded_values
        )
        app.state.sessions = SessionService(
            open_session_store(settings.session_store, settings.session_key_prefix),
            store,
            batcher,
            default_ttl_s=settings.session_ttl_s,
            max_sessions=settings.max_sessions,
        )
        # Everything alive now (TensorFlow, Keras, the loaded models) lives as long as the process; moving it
        # out of the collector's reach keeps full collections short: they caused p99 spikes of 100-200 ms
        # at 32 connections (bench/). Collect first so no garbage is frozen with it.
        gc.collect()
        gc.freeze()
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(app.state.sessions.reap_forever, settings.session_reap_interval_s)
                yield
                background.cancel_scope.cancel()
        finally:
            batcher.close()
            await app.state.sessions.store.close()
            await anyio.to_thread.run_sync(manager.close)

    app = FastAPI(
        title="lstm-serve",
        version="0.1.0",
        summary="Train, compare and serve five Keras LSTM architectures for binary sequence classification.",
        lifespan=lifespan,
        # Served by service.api.docs behind the read-access check instead (FastAPI's own are unguarded).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.fast_path:
        app.add_middleware(FastPath)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(health.router)
    app.include_router(health.metrics_router, dependencies=[ReadAccess])
    app.include_router(docs.router, dependencies=[ReadAccess])
    app.include_router(ui.router, include_in_schema=False, dependencies=[ReadAccess])
    app.include_router(kserve.health_router)
    # Any native route may answer 401 (API_KEY, API_KEY_ALL) and 413 (MAX_BODY_BYTES) in the error format.
    guarded = {401: {"model": ErrorResponse}, 413: {"model": ErrorResponse}}
    for router in (catalog.router, models.router, jobs.router, sessions.router, compare.router):
        app.include_router(router, dependencies=[ReadAccess], responses=guarded)
    for router in (tfserving.router, kserve.router):
        app.include_router(router, dependencies=[ReadAccess])
    return app


app = create_app()
