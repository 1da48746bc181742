"""Request and response bodies of KServe V2 / Open Inference Protocol over HTTP (kserve ``required_api.md``),
with the parameters of the binary tensor data extension (``binary_data_size``, ``binary_data``,
``binary_data_output``) and Triton's sequence extension (``sequence_id``, ``sequence_start``, ``sequence_end``).

Field names follow the protocol, not lstm-serve's own style; ``codec`` checks tensor contents.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

#: What a ``parameters`` object may hold (the protocol's ``$parameter``).
Parameters = dict[str, Any]


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
    extensions: list[str] = Field(examples=[["binary_tensor_data", "sequence"]])


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
    name: str = Field(examples=["sequence"])
    shape: list[Annotated[int, Field(ge=0)]] = Field(examples=[[2, 3, 1]])
    datatype: str = Field(examples=["FP32"], description="The model's: FP32 for float models, INT32 for token models")
    parameters: Parameters | None = Field(
        None, description='{"binary_data_size": n}: the values are n bytes of the binary section after the JSON'
    )
    data: list[Any] | None = Field(
        None, description="Row-major, flat or nested; absent when sent as binary", examples=[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]
    )


class V2RequestOutput(BaseModel):
    name: str = Field(examples=["probability"])
    parameters: Parameters | None = Field(None, description='{"binary_data": true} answers this output as binary')


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = Field(
        None,
        description=(
            '"binary_data_output": true answers every output as binary; "sequence_id" (int or string), '
            '"sequence_start", "sequence_end" step a Triton sequence (an lstm-serve session)'
        ),
    )
    inputs: Annotated[list[V2RequestInput], Field(min_length=1)]
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32"] = "FP32"
    parameters: Parameters | None = None
    data: list[float] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[V2ResponseOutput]


class V2Error(BaseModel):
    """The protocol's error body."""

    error: str = Field(examples=["unexpected inference input 'input0' for model 'demo'"])
