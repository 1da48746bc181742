"""Request and response bodies of the TF Serving REST API (https://www.tensorflow.org/tfx/serving/api_rest).

Field names follow TF Serving, not lstm-serve's own style. Tensor contents are typed loosely (``Any``)
because the protocol lets a client nest them freely; ``codec`` checks them.
"""

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


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


class TfError(BaseModel):
    """TF Serving's error body."""

    error: str = Field(examples=["Servable not found for request: Latest(half)"])
