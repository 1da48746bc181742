"""What ``padding: "masked"`` costs at the engine: ``Servable.predict`` on 32 sequences, pre-padded against masked.

One ``lstm`` (units 10, max_len 50, one feature) with the same weights is stored twice, pre-padded and masked,
and each is timed on a ragged batch (lengths 10..50: the masked engine runs one call per distinct length) and on
a batch of full-length sequences (one call each). From the repository root::

    .venv/bin/python bench/masked_padding.py
"""

from __future__ import annotations

import sys
import tempfile
import timeit
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.architectures import ArchParams, build_sequence_model, get_architecture  # noqa: E402
from models.serving.servable import ModelMeta, Servable, read_version, write_version  # noqa: E402

MAX_LEN = 50
BATCH = 32
ROUNDS = 3


def _stored(folder: Path, padding: str, weights: list[np.ndarray]) -> Servable:
    arch = get_architecture("lstm")
    params = ArchParams(max_len=MAX_LEN, padding=padding)  # type: ignore[arg-type]
    model = build_sequence_model(arch, params)
    model.set_weights(weights)
    folder.mkdir()
    meta = ModelMeta(name="bench", architecture="lstm", params=arch.relevant_params(params), version=1,
                     input_kind="float", max_len=MAX_LEN, created_at="", source="bench", padding=padding)
    write_version(folder, meta, model)
    return read_version(folder)


def main() -> int:
    rng = np.random.default_rng(0)
    batches = {
        "ragged 10..50 steps": [rng.normal(size=int(n)).round(3).tolist() for n in rng.integers(10, MAX_LEN + 1, BATCH)],
        "all 50 steps": [rng.normal(size=MAX_LEN).round(3).tolist() for _ in range(BATCH)],
    }
    weights = build_sequence_model(get_architecture("lstm"), ArchParams(max_len=MAX_LEN)).get_weights()
    with tempfile.TemporaryDirectory() as tmp:
        servables = {padding: _stored(Path(tmp) / padding, padding, weights) for padding in ("pre", "masked")}
        print(f"| batch of {BATCH} | pre-padded ms | masked ms | masked / pre |\n|---|---:|---:|---:|")
        for label, batch in batches.items():
            times: dict[str, float] = {}
            # Interleaved rounds, best of each: this machine is shared, and drifts hit both alike.
            for _ in range(ROUNDS):
                for padding, servable in servables.items():
                    x = servable.to_input(batch, None)
                    best = min(timeit.repeat(lambda s=servable, x=x: s.predict(x), number=200, repeat=3)) / 200 * 1e3
                    times[padding] = min(times.get(padding, best), best)
            print(f"| {label} | {times['pre']:.3f} | {times['masked']:.3f} | {times['masked'] / times['pre']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
