"""The prediction data plane: from request sequences to probabilities through the batch scheduler."""

from collections.abc import Sequence
from functools import partial

import anyio.to_thread
import numpy as np

from models.serving.batching import BatchScheduler, predict_batch
from models.errors import InvalidInput
from models.inputs import Truncate, check_padded_size
from models.serving.servable import Servable
from models.serving.registry import ModelRegistry

#: Requests with more sequences than this are padded off the event loop.
_INLINE_PREPARE_LIMIT = 256


class Predictor:
    """Looks the model version up, validates and pads the input, and runs it batched with others."""

    def __init__(self, models: ModelRegistry, batcher: BatchScheduler, max_sequences: int, max_values: int | None = None) -> None:
        self.models = models
        self.batcher = batcher
        self.max_sequences = max_sequences
        #: Most values a request's padded batch may hold (``MAX_PADDED_VALUES``), checked before padding.
        self.max_values = max_values

    async def predict(
        self, name: str, sequences: Sequence[Sequence[float]], version: int | None = None, truncate: Truncate | None = None
    ) -> tuple[Servable, np.ndarray]:
        """The version that answered and its outputs, ``(n, output_width)``, one row per sequence in order."""
        if len(sequences) > self.max_sequences:
            raise InvalidInput(
                f"Too many sequences in one request: {len(sequences)}, at most {self.max_sequences}.",
                field="sequences",
                expected=f"at most {self.max_sequences}",
                got=len(sequences),
            )
        servable = await self.models.servable(name, version)
        check_padded_size(len(sequences), servable.params.max_len, self.max_values, "sequences", servable.params.n_features)
        if len(sequences) > _INLINE_PREPARE_LIMIT:
            batch = await anyio.to_thread.run_sync(servable.to_input, sequences, truncate)
        else:
            batch = servable.to_input(sequences, truncate)
        probabilities = await self.batcher.submit(
            ("predict", servable), batch, partial(predict_batch, servable), cost=batch.size
        )
        return servable, probabilities
