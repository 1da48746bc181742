"""The V2 data plane both transports call: health, metadata, readiness and inference, over the same
``ModelRegistry``, ``Predictor`` and ``SessionService`` as the native routes."""

import logging

import numpy as np

from models.errors import NotFound
from models.serving.predictor import Predictor
from models.serving.session_service import SessionService
from models.serving.registry import ModelRegistry
from service.metrics import Metrics
from service.protocols.common import INPUT_NAME, OUTPUT_NAME, input_shape, output_shape
from service.protocols.kserve_v2.codec import DATATYPES, InferAnswer, InferCall, batch_of
from service.protocols.kserve_v2.schemas import V2ModelMetadata, V2ServerMetadata, V2TensorMetadata
from service.protocols.kserve_v2.sequences import TritonSequences

log = logging.getLogger(__name__)

#: The protocol extensions this server implements, as listed in its server metadata.
EXTENSIONS = ["binary_tensor_data", "sequence"]


class V2DataPlane:
    """What a V2 server answers, independent of HTTP or gRPC."""

    def __init__(
        self, registry: ModelRegistry, predictor: Predictor, sessions: SessionService, metrics: Metrics, server_version: str
    ) -> None:
        self.registry = registry
        self.predictor = predictor
        self.sequences = TritonSequences(sessions)
        self.metrics = metrics
        self.server_version = server_version

    @property
    def ready(self) -> bool:
        """Ready once the registry has loaded each model's latest version."""
        return self.registry.ready

    def server_metadata(self) -> V2ServerMetadata:
        """Name, version and the supported extensions."""
        return V2ServerMetadata(version=self.server_version, extensions=EXTENSIONS)

    def model_metadata(self, name: str, version: int | None) -> V2ModelMetadata:
        """Versions and the input and output tensors of a version (default: the latest), from the index."""
        info = self.registry.index.info(name)
        meta = self.registry.index.meta(name, version)
        return V2ModelMetadata(
            name=name,
            versions=[str(v) for v in info.versions],
            inputs=[
                V2TensorMetadata(
                    name=INPUT_NAME, datatype=DATATYPES[meta.input_kind], shape=input_shape(meta)
                )
            ],
            outputs=[V2TensorMetadata(name=OUTPUT_NAME, datatype="FP32", shape=output_shape(meta))],
        )

    async def model_ready(self, name: str, version: int | None) -> bool:
        """Whether the version is loaded and can answer (``NotFound`` for an unknown model or version)."""
        try:
            await self.registry.servable(name, version)
        except NotFound:
            raise
        except Exception:  # noqa: BLE001 - a version that cannot load is listed but not ready
            log.exception("Model %s (version %s) could not load", name, version)
            return False
        return True

    async def infer(self, call: InferCall) -> InferAnswer:
        """Outputs for the call's sequences, or, in a Triton sequence, after each of its values."""
        meta = self.registry.index.meta(call.model, call.version)
        batch = batch_of(call, meta)
        if call.sequence is None:
            servable, probabilities = await self.predictor.predict(call.model, batch, meta.version)
            self.metrics.count_predicted(call.model, len(probabilities))
            return InferAnswer(call, servable.meta.version, np.asarray(probabilities, np.float32))
        record, probabilities = await self.sequences.step(call.model, call.version, call.sequence, batch[0])
        self.metrics.count_steps(call.model, len(probabilities))
        return InferAnswer(call, record.version, np.asarray(probabilities, np.float32))

