"""KServe V2 / Open Inference Protocol (``/v2/...``), so existing V2 clients work unchanged.

Each lstm-serve model has one input tensor (``sequence``: FP32 ``[-1, max_len, 1]`` or INT32
``[-1, max_len]``) and one output (``probability``: FP32 ``[-1, 1]``).
"""

import logging

from fastapi import APIRouter, Request, Response

from models.errors import InvalidInput, NotFound
from models.serving.store import ModelStore
from service.compat import (
    INPUT_NAME,
    OUTPUT_NAME,
    Version,
    check_outputs,
    input_shape,
    predict_sequences,
    sequences_from_tensor,
)
from service.compat_schemas import (
    CompatError,
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ResponseOutput,
    V2ServerMetadata,
    V2TensorMetadata,
)
from service.deps import MetricsDep, ModelName, PredictorDep, StoreDep

log = logging.getLogger(__name__)

_ERRORS = {400: {"model": CompatError}, 404: {"model": CompatError}}

#: Probes stay open like ``/health/*``; the app registers this router without the read-access check.
health_router = APIRouter(prefix="/v2/health", tags=["kserve-v2"])
router = APIRouter(prefix="/v2", tags=["kserve-v2"], responses=_ERRORS)


@health_router.get("/live")
def server_live() -> V2Live:
    """The server is up."""
    return V2Live(live=True)


@health_router.get("/ready", responses={503: {"model": V2Ready}})
def server_ready(store: StoreDep, response: Response) -> V2Ready:
    """Ready once the model store is loaded (503 until then)."""
    if not store.ready:
        response.status_code = 503
    return V2Ready(ready=store.ready)


@router.get("")
def server_metadata(request: Request) -> V2ServerMetadata:
    """Server name, version and extensions (none)."""
    return V2ServerMetadata(version=request.app.version)


def _model_metadata(store: ModelStore, name: str, version: int | None) -> V2ModelMetadata:
    info = store.info(name)
    meta = store.meta(name, version)
    datatype = "FP32" if meta.input_kind == "float" else "INT32"
    return V2ModelMetadata(
        name=name,
        versions=[str(v) for v in info.versions],
        inputs=[V2TensorMetadata(name=INPUT_NAME, datatype=datatype, shape=input_shape(meta.input_kind, meta.max_len))],
        outputs=[V2TensorMetadata(name=OUTPUT_NAME, datatype="FP32", shape=[-1, 1])],
    )


def _model_ready(store: ModelStore, name: str, version: int | None, response: Response) -> V2ModelReady:
    try:
        store.get(name, version)
    except NotFound:
        raise
    except Exception:  # noqa: BLE001 - a version that cannot load is listed but not ready
        log.exception("Model %s (version %s) could not load", name, version)
        response.status_code = 503
        return V2ModelReady(name=name, ready=False)
    return V2ModelReady(name=name, ready=True)


async def _infer(
    name: str,
    version: int | None,
    body: V2InferRequest,
    store: ModelStore,
    predictor: PredictorDep,
    metrics: MetricsDep,
) -> V2InferResponse:
    if len(body.inputs) != 1:
        raise InvalidInput(
            f"inputs: the model has one input, '{INPUT_NAME}'; got {len(body.inputs)}.",
            field="inputs",
            expected=1,
            got=len(body.inputs),
        )
    check_outputs(body.outputs)
    meta = store.meta(name, version)
    sequences = sequences_from_tensor(body.inputs[0], meta.input_kind)
    used, probabilities = await predict_sequences(predictor, metrics, name, sequences, meta.version)
    output = V2ResponseOutput(name=OUTPUT_NAME, shape=[len(probabilities), 1], data=probabilities)
    return V2InferResponse(model_name=name, model_version=str(used), id=body.id, outputs=[output])


@router.get("/models/{name}")
def model_metadata(name: ModelName, store: StoreDep) -> V2ModelMetadata:
    """Versions, platform and input/output tensors of the latest version."""
    return _model_metadata(store, name, None)


@router.get("/models/{name}/versions/{version}")
def version_metadata(name: ModelName, version: Version, store: StoreDep) -> V2ModelMetadata:
    """Metadata of one version."""
    return _model_metadata(store, name, version)


@router.get("/models/{name}/ready", responses={503: {"model": V2ModelReady}})
def model_ready(name: ModelName, store: StoreDep, response: Response) -> V2ModelReady:
    """Whether the latest version is loaded and can answer."""
    return _model_ready(store, name, None, response)


@router.get("/models/{name}/versions/{version}/ready", responses={503: {"model": V2ModelReady}})
def version_ready(name: ModelName, version: Version, store: StoreDep, response: Response) -> V2ModelReady:
    """Whether one version is loaded and can answer."""
    return _model_ready(store, name, version, response)


@router.post("/models/{name}/infer", response_model_exclude_none=True)
async def infer(
    name: ModelName, body: V2InferRequest, store: StoreDep, predictor: PredictorDep, metrics: MetricsDep
) -> V2InferResponse:
    """Probabilities with the latest version, as one FP32 ``[n, 1]`` output tensor."""
    return await _infer(name, None, body, store, predictor, metrics)


@router.post("/models/{name}/versions/{version}/infer", response_model_exclude_none=True)
async def infer_version(
    name: ModelName,
    version: Version,
    body: V2InferRequest,
    store: StoreDep,
    predictor: PredictorDep,
    metrics: MetricsDep,
) -> V2InferResponse:
    """Probabilities with one version of a model."""
    return await _infer(name, version, body, store, predictor, metrics)
