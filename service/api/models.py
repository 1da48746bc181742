"""Models: train, upload, list, describe, delete, predict."""

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from models.training.upload_inspection import UploadLimits
from models.training.uploads import import_model
from models.serving.predictor import Predictor
from models.serving.model_index import ModelInfo
from models.training.job_queue import JobOrder
from service.deps import JobsDep, MetricsDep, ModelName, PredictorDep, SettingsDep, IndexDep, WriteAccess, form_fields
from service.metrics import Metrics
from service.schemas import (
    ArchitectureName,
    ErrorResponse,
    JobAccepted,
    ModelPublic,
    PredictRequest,
    PredictResponse,
    TrainRequest,
)

router = APIRouter(tags=["models"], responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})


def model_public(info: ModelInfo) -> ModelPublic:
    """The public description of a model: its latest version plus the version list."""
    meta = info.latest
    return ModelPublic(
        name=meta.name,
        architecture=meta.architecture,
        params=meta.params,
        version=meta.version,
        versions=info.versions,
        input_kind=meta.input_kind,
        max_len=meta.max_len,
        metrics=meta.metrics,
        created_at=meta.created_at,
        source=meta.source,
        backend=meta.extra.get("backend"),
        task=meta.task,
        n_features=meta.n_features,
        n_classes=meta.n_classes,
        n_outputs=meta.n_outputs,
        padding=meta.padding,
    )


@router.post(
    "/models/{name}/train",
    status_code=202,
    dependencies=[WriteAccess],
    responses={429: {"model": ErrorResponse}, 507: {"model": ErrorResponse}},
)
def train_model(name: ModelName, body: TrainRequest, jobs: JobsDep) -> JobAccepted:
    """Train a new version of a model in the background; poll the returned job."""
    job = jobs.enqueue(JobOrder("train", name, body))
    return JobAccepted(job_id=job.job_id, model=name, status=job.status)


@router.post(
    "/models/{name}/load",
    status_code=201,
    dependencies=[WriteAccess, form_fields("file", "architecture", "max_len")],
    responses={507: {"model": ErrorResponse}},
)
def load_model(
    name: ModelName,
    index: IndexDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="A Keras 3 .keras file")],
    architecture: Annotated[ArchitectureName | None, Form()] = None,
    max_len: Annotated[int | None, Form(ge=1, description="Needed when the model has no fixed length")] = None,
) -> ModelPublic:
    """Upload a saved Keras 3 model as the next version; it is checked before it is read, and never run."""
    limits = UploadLimits(
        max_uncompressed_bytes=settings.max_upload_uncompressed_bytes,
        max_compression_ratio=settings.max_upload_compression_ratio,
        max_params=settings.max_model_params,
        max_len=settings.max_sequence_length,
    )
    meta = import_model(index, name, file.file.read(), architecture, max_len, limits)
    return model_public(index.info(meta.name))


@router.get("/models")
async def list_models(index: IndexDep) -> list[ModelPublic]:
    """Every stored model with its latest version."""
    return [model_public(index.info(name)) for name in index.names()]


@router.get("/models/{name}")
async def get_model(name: ModelName, index: IndexDep) -> ModelPublic:
    """One model: architecture, parameters, versions and training metrics."""
    return model_public(index.info(name))


@router.delete("/models/{name}", status_code=204, dependencies=[WriteAccess])
def delete_model(name: ModelName, index: IndexDep) -> Response:
    """Delete a model and all its versions."""
    index.delete(name)
    return Response(status_code=204)


async def answer_predict(predictor: Predictor, metrics: Metrics, name: str, body: PredictRequest) -> PredictResponse:
    """The answer to a predict request, for the route and the fast path alike (so they cannot differ)."""
    servable, outputs = await predictor.predict(name, body.sequences, body.version, body.truncate)
    metrics.count_predicted(name, len(outputs))
    return PredictResponse.of(name, servable.meta.version, servable.params.task, outputs)


@router.post("/models/{name}/predict")
async def predict(name: ModelName, body: PredictRequest, predictor: PredictorDep, metrics: MetricsDep) -> PredictResponse:
    """Each sequence's prediction, in order: probability and label (binary), class probabilities and label
    (multiclass) or values (regression); short sequences are pre-padded with 0 unless the model is masked."""
    return await answer_predict(predictor, metrics, name, body)
