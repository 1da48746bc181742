"""FastAPI dependencies: the objects the lifespan built, handed to routes as ``Annotated`` aliases.

All are ``async def``: none blocks, and FastAPI would run a plain ``def`` dependency in its thread pool,
a hop that cost more than the whole model call (measured in bench/). The getters take the connection
(``HTTPConnection``), so WebSocket routes (``service.api.stream``) get the same objects as HTTP routes.
"""

from typing import Annotated, Any

from fastapi import Depends, Path, Request
from starlette.requests import HTTPConnection
from fastapi.exceptions import RequestValidationError

from models.training.job_queue import JobQueue
from models.serving.predictor import Predictor
from models.serving.session_service import SessionService
from models.serving.model_index import ModelIndex
from models.serving.registry import ModelRegistry
from service.auth import bearer_matches
from service.config import Settings
from service.errors import Unauthorized
from service.metrics import Metrics
from service.protocols.kserve_v2.dataplane import V2DataPlane
from service.schemas import NAME_PATTERN


async def get_settings(connection: HTTPConnection) -> Settings:
    return connection.app.state.settings


async def get_registry(connection: HTTPConnection) -> ModelRegistry:
    return connection.app.state.registry


async def get_index(connection: HTTPConnection) -> ModelIndex:
    return connection.app.state.registry.index


async def get_jobs(connection: HTTPConnection) -> JobQueue:
    return connection.app.state.jobs


async def get_metrics(connection: HTTPConnection) -> Metrics:
    return connection.app.state.metrics


async def get_predictor(connection: HTTPConnection) -> Predictor:
    return connection.app.state.predictor


async def get_sessions(connection: HTTPConnection) -> SessionService:
    return connection.app.state.sessions


async def get_v2(connection: HTTPConnection) -> V2DataPlane:
    return connection.app.state.v2


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
IndexDep = Annotated[ModelIndex, Depends(get_index)]
JobsDep = Annotated[JobQueue, Depends(get_jobs)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
SessionsDep = Annotated[SessionService, Depends(get_sessions)]
V2Dep = Annotated[V2DataPlane, Depends(get_v2)]

ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="Model name", examples=["demo"])]


def _check_bearer(request: Request, key: str) -> None:
    if not bearer_matches(request.headers.get("authorization", ""), key):
        raise Unauthorized


async def require_write_access(request: Request, settings: SettingsDep) -> None:
    """State-changing routes need the bearer token whenever ``API_KEY`` is set."""
    if settings.api_key:
        _check_bearer(request, settings.api_key)


async def require_read_access(request: Request, settings: SettingsDep) -> None:
    """Reads, predictions and sessions need it only when ``API_KEY_ALL`` is on too."""
    if settings.api_key and settings.api_key_all:
        _check_bearer(request, settings.api_key)


WriteAccess = Depends(require_write_access)
ReadAccess = Depends(require_read_access)


def form_fields(*allowed: str) -> Any:
    """A dependency refusing form fields other than ``allowed`` (a typo such as ``architechture``), as JSON
    bodies refuse unknown fields: 422 naming the field. FastAPI has parsed (and cached) the form by then."""

    async def only_allowed(request: Request) -> None:
        form = await request.form()
        unknown = [key for key in form if key not in allowed]
        if unknown:
            raise RequestValidationError(
                [
                    {"type": "extra_forbidden", "loc": ("form", key), "msg": f"Extra inputs are not permitted (expected one of {list(allowed)})", "input": form[key] if isinstance(form[key], str) else "<file>"}
                    for key in unknown
                ]
            )

    return Depends(only_allowed)
