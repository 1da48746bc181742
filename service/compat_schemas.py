"""Request and response bodies of the compatibility routes: TF Serving REST (``/v1``) and KServe V2 (``/v2``).

Field names follow those protocols, not lstm-serve's own style. Tensor contents are typed loosely
(``Any``) because both protocols let a client nest them freely; ``service.compat`` checks them and
turns them into the same list of sequences that ``/models/{name}/predict`` takes.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

# --- TF Serving REST API (https://www.tensorflow.org/tfx/serving/api_rest) ---------------------------


class TfStatus(BaseModel):
    error_code: str = "OK"
    error_message: str = ""


class TfVersionStatus(BaseModel):
    version: str = Field(examples=["1"])
    state: Literal["AVAILABLE"] = "AVAILABLE"
    status: TfStatus = Field(default_factory=TfStatus)


class TfModelStatusResponse(BaseModel):
    model_version_status: list[TfVersionStatus]


class TfDim(BaseModel):
    size: str = Field(examples=["-1"], description="int64 written as a string, as proto3 JSON does")
    name: str = ""


class TfTensorShape(BaseModel):
    dim: list[TfDim]
    unknown_rank: bool = False


class TfTensorInfo(BaseModel):
    dtype: Literal["DT_FLOAT", "DT_INT32"]
    tensor_shape: TfTensorShape
    name: str


class TfSignatureDef(BaseModel):
    inputs: dict[str, TfTensorInfo]
    outputs: dict[str, TfTensorInfo]
    method_name: str = "tensorflow/serving/predict"


class TfSignatureDefMap(BaseModel):
    signature_def: dict[str, TfSignatureDef]


class TfMetadata(BaseModel):
    signature_def: TfSignatureDefMap


class TfModelSpec(BaseModel):
    name: str
    signature_name: str = ""
    version: str


class TfMetadataResponse(BaseModel):
    model_spec: TfModelSpec
    metadata: TfMetadata


class TfPredictRequest(BaseModel):
    """Row (``instances``) or columnar (``inputs``) format; exactly one of the two."""

    signature_name: str | None = Field(None, examples=["serving_default"])
    instances: list[Any] | None = Field(
        None,
        description="One sequence per instance: numbers, 1-element lists, or {'<input name>': sequence}",
        examples=[[[[0.1], [0.2], [0.3]], [0.4, 0.5]]],
    )
    inputs: list[Any] | dict[str, Any] | None = Field(
        None, description="The whole batch, or {'<input name>': batch}", examples=[{"sequence": [[0.1, 0.2, 0.3]]}]
    )

    @model_validator(mode="after")
    def _one_format(self) -> "TfPredictRequest":
        if (self.instances is None) == (self.inputs is None):
            raise ValueError("send exactly one of 'instances' (row format) and 'inputs' (columnar format)")
        return self


class TfPredictResponse(BaseModel):
    predictions: list[list[float]] = Field(examples=[[[0.93], [0.12]]])


class TfColumnarResponse(BaseModel):
    outputs: list[list[float]] = Field(examples=[[[0.93], [0.12]]])


# --- KServe V2 / Open Inference Protocol (kserve/kserve docs/predict-api/v2/required_api.md) --------

class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2ServerMetadata(BaseModel):
    name: str = "lstm-serve"
    version: str
    extensions: list[str] = Field(default_factory=list)


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable-size dimension")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = "tensorflow_keras"
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2RequestInput(BaseModel):
    name: str = Field(examples=["input0"])
    shape: list[Annotated[int, Field(ge=0)]] = Field(examples=[[2, 3, 1]])
    datatype: str = Field(examples=["FP32"], description="FP32 or FP64 for float models, INT32 or INT64 for token models")
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="Row-major, flat or nested", examples=[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])


class V2RequestOutput(BaseModel):
    name: str = Field(examples=["probability"])
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: Annotated[list[V2RequestInput], Field(min_length=1)]
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32"] = "FP32"
    data: list[float]


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2ResponseOutput]


class CompatError(BaseModel):
    """The error body of both protocols."""

    error: str
