"""TF Serving REST API routes (``/v1/models/...``), so existing TF Serving clients work unchanged.

Model status, metadata and ``:predict`` in row (``instances``) and columnar (``inputs``) format; each
lstm-serve model has one signature, ``serving_default``, with input ``sequence`` and output ``probability``.
"""

from fastapi import APIRouter

from models.errors import InvalidInput
from models.serving.model_index import ModelIndex
from service.deps import IndexDep, MetricsDep, ModelName, PredictorDep
from service.protocols.common import INPUT_NAME, OUTPUT_NAME, Version, input_shape, output_shape, predict_sequences
from service.protocols.tfserving.codec import sequences_from_inputs, sequences_from_instances
from service.protocols.routing import ProtocolRoute
from service.protocols.tfserving.errors import render_error
from service.protocols.tfserving.schemas import (
    TfColumnarResponse,
    TfDim,
    TfError,
    TfMetadata,
    TfMetadataResponse,
    TfModelSpec,
    TfModelStatusResponse,
    TfPredictRequest,
    TfPredictResponse,
    TfSignatureDef,
    TfSignatureDefMap,
    TfTensorInfo,
    TfTensorShape,
    TfVersionStatus,
)

SIGNATURE = "serving_default"


class TfServingRoute(ProtocolRoute):
    """Routes of the TF Serving API: JSON bodies whatever their Content-Type, errors in TF Serving's format."""

    render_error = staticmethod(render_error)

router = APIRouter(
    prefix="/v1/models",
    tags=["tf-serving"],
    route_class=TfServingRoute,
    # 401 with API_KEY_ALL, 413 past MAX_BODY_BYTES: in TF Serving's error format like the others.
    responses={status: {"model": TfError} for status in (400, 401, 404, 413)},
)


def _tensor(dtype: str, shape: list[int], name: str) -> TfTensorInfo:
    return TfTensorInfo(dtype=dtype, tensor_shape=TfTensorShape(dim=[TfDim(size=str(d)) for d in shape]), name=name)


def _metadata(index: ModelIndex, name: str, version: int | None) -> TfMetadataResponse:
    meta = index.meta(name, version)
    dtype = "DT_FLOAT" if meta.input_kind == "float" else "DT_INT32"
    signature = TfSignatureDef(
        inputs={INPUT_NAME: _tensor(dtype, input_shape(meta), f"{SIGNATURE}_{INPUT_NAME}:0")},
        outputs={OUTPUT_NAME: _tensor("DT_FLOAT", output_shape(meta), "StatefulPartitionedCall:0")},
    )
    return TfMetadataResponse(
        model_spec=TfModelSpec(name=name, version=str(meta.version)),
        metadata=TfMetadata(signature_def=TfSignatureDefMap(signature_def={SIGNATURE: signature})),
    )


async def _predict(
    name: str,
    version: int | None,
    body: TfPredictRequest,
    index: ModelIndex,
    predictor: PredictorDep,
    metrics: MetricsDep,
) -> TfPredictResponse | TfColumnarResponse:
    meta = index.meta(name, version)  # an unknown model or version is a 404 before any input error
    if body.signature_name not in (None, "", SIGNATURE):
        raise InvalidInput(
            f"signature_name: the model has one signature, '{SIGNATURE}'; got '{body.signature_name}'.",
            field="signature_name",
            expected=[SIGNATURE],
            got=body.signature_name,
        )
    if body.instances is not None:
        sequences = sequences_from_instances(body.instances, meta.n_features)
    else:
        assert body.inputs is not None, "the schema requires one of the two"
        sequences = sequences_from_inputs(body.inputs, meta.n_features)
    _, rows = await predict_sequences(predictor, metrics, name, sequences, meta.version)
    return TfPredictResponse(predictions=rows) if body.instances is not None else TfColumnarResponse(outputs=rows)


@router.get("/{name}")
def model_status(name: ModelName, index: IndexDep) -> TfModelStatusResponse:
    """Status of every version of a model (all AVAILABLE)."""
    return TfModelStatusResponse(model_version_status=[TfVersionStatus(version=str(v)) for v in index.info(name).versions])


@router.get("/{name}/versions/{version}")
def version_status(name: ModelName, version: Version, index: IndexDep) -> TfModelStatusResponse:
    """Status of one version of a model."""
    index.meta(name, version)  # ModelNotFound / VersionNotFound, without loading the version
    return TfModelStatusResponse(model_version_status=[TfVersionStatus(version=str(version))])


@router.get("/{name}/metadata")
def model_metadata(name: ModelName, index: IndexDep) -> TfMetadataResponse:
    """Signature of the latest version: input tensor name, dtype and shape, output shape."""
    return _metadata(index, name, None)


@router.get("/{name}/versions/{version}/metadata")
def version_metadata(name: ModelName, version: Version, index: IndexDep) -> TfMetadataResponse:
    """Signature of one version."""
    return _metadata(index, name, version)


@router.post("/{name}:predict")
async def predict(
    name: ModelName, body: TfPredictRequest, index: IndexDep, predictor: PredictorDep, metrics: MetricsDep
) -> TfPredictResponse | TfColumnarResponse:
    """Outputs with the latest version: ``{"predictions": [[p], ...]}`` or ``{"outputs": [[p], ...]}``, a row of
    the output's width (class probabilities, regression values) per sequence."""
    return await _predict(name, None, body, index, predictor, metrics)


@router.post("/{name}/versions/{version}:predict")
async def predict_version(
    name: ModelName,
    version: Version,
    body: TfPredictRequest,
    index: IndexDep,
    predictor: PredictorDep,
    metrics: MetricsDep,
) -> TfPredictResponse | TfColumnarResponse:
    """Probabilities with one version of a model."""
    return await _predict(name, version, body, index, predictor, metrics)
