""""Which architecture fits my data?": train several on the same data and explain the result.

Every candidate gets the same data, split, seed and epoch budget. The leaderboard ranks them by
validation accuracy (then loss, then size); the recommendation explains the ranking in terms of what
each architecture adds: a per-step projection, an embedding, a second direction, state across calls.
"""

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.architectures import ARCHITECTURES, Architecture, ArchParams, InputKind, get_architecture
from models.training.datasets import get_dataset
from models.errors import InvalidInput
from models.training.jobs import JobContext, Work
from models.training.learning_curves import draw_learning_curves
from models.serving.engines import export_engine
from models.serving.model_index import ModelIndex
from models.training.fitting import (
    FitResult,
    FitSettings,
    TrainingData,
    artifact_for,
    fit,
    prepare_training,
)

#: Accuracy differences smaller than this are noise on these small validation sets: prefer the simpler model.
NEGLIGIBLE = 0.02


@dataclass
class Candidate:
    """One architecture in a comparison, with its data ready."""

    arch: Architecture
    data: TrainingData
    params: ArchParams


@dataclass
class Entry:
    """One leaderboard row."""

    architecture: str
    val_accuracy: float
    val_loss: float
    param_count: int
    train_seconds: float
    predict_ms_per_sequence: float
    note: str | None = None
    history: dict[str, list[float]] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The row as the report shows it (histories go to the plot, not the table)."""
        row = asdict(self)
        del row["history"]
        return row


def data_kind(sequences: Sequence[Sequence[float]]) -> InputKind:
    """Whole non-negative numbers everywhere read as token ids; anything else is float data."""
    for seq in sequences:
        for value in seq:
            if value < 0 or value != int(value):
                return "float"
    return "tokens"


def choose(requested: list[str] | None, kind: InputKind) -> tuple[list[Architecture], dict[str, str]]:
    """The architectures to train and, for each one left out, the reason."""
    skipped: dict[str, str] = {}
    chosen: list[Architecture] = []
    names = requested or list(ARCHITECTURES)
    for name in names:
        arch = get_architecture(name)
        if arch.input_kind == "tokens" and kind == "float":
            skipped[name] = "float data: an embedding needs whole-number token ids, and these values are not."
        elif arch.input_kind == "float" and kind == "tokens" and requested is None:
            skipped[name] = (
                "token data: a float architecture would read token ids as magnitudes (id 7 'bigger' than id 3); "
                "ask for it by name to include it anyway."
            )
        else:
            chosen.append(arch)
    if not chosen:
        raise InvalidInput(
            "None of the requested architectures can take this data.", field="architectures", got=names, skipped=skipped
        )
    return chosen, skipped


def _predict_ms_per_sequence(result: FitResult, vocab_size: int, batch: int = 32) -> float:
    """Median cost per sequence of the engine the model would be served with, batch of ``batch``."""
    with tempfile.TemporaryDirectory(prefix="lstm-serve-compare-") as tmp:
        engine = export_engine(result.model, Path(tmp) / "predict.onnx", vocab_size)
        shape = (batch, *result.model.inputs[0].shape[1:])
        is_tokens = "int" in str(result.model.inputs[0].dtype)
        x = np.zeros(shape, np.int32 if is_tokens else np.float32)
        engine.run(x)
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            engine.run(x)
            timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000 / batch


def rank(entries: list[Entry]) -> list[Entry]:
    """Best first: validation accuracy, then validation loss, then fewer parameters."""
    return sorted(entries, key=lambda e: (-round(e.val_accuracy, 4), e.val_loss, e.param_count))


def recommended(leaderboard: list[Entry]) -> Entry:
    """The smallest model within ``NEGLIGIBLE`` accuracy of the best: on small validation sets, less is safer."""
    best = leaderboard[0]
    return min((e for e in leaderboard if best.val_accuracy - e.val_accuracy < NEGLIGIBLE), key=lambda e: e.param_count)


def recommend(leaderboard: list[Entry], skipped: dict[str, str], epochs: int) -> str:
    """Plain-English reading of a ranked leaderboard."""
    best, choice = leaderboard[0], recommended(leaderboard)
    by_name = {e.architecture: e for e in leaderboard}
    lines = [f"Best: {best.architecture} with validation accuracy {best.val_accuracy:.1%} after {epochs} epochs."]
    if choice is not best:
        lines.append(
            f"{choice.architecture} is within {NEGLIGIBLE:.0%} of it with {choice.param_count} parameters "
            f"instead of {best.param_count}; on this much validation data that gap is noise, so the "
            f"recommendation is {choice.architecture} unless more data confirms the difference."
        )
    if best.val_accuracy < 0.6:
        lines.append(
            "No architecture learned this task well, so the ranking says little: train for more epochs or with "
            "more units before concluding which fits."
        )
    else:
        lines += _explain_pairs(by_name)
    if "stateful_lstm" in by_name:
        lines.append(
            "stateful_lstm is the same network as lstm trained the same way; choose it when values arrive one at "
            "a time and you want a prediction after each without resending history (sessions give that to every "
            "unidirectional architecture here)."
        )
    for name, reason in skipped.items():
        lines.append(f"Skipped {name}: {reason}")
    return " ".join(lines)


#: (simpler, richer, what a gain of the richer one means, what no gain means); ``{gain}`` is filled in.
_PAIRS = (
    (
        "lstm",
        "td_dense_lstm",
        "The per-step Dense projection helped ({gain:+.1%} over lstm): single raw values were hard for the small "
        "LSTM to use, and lifting each step into more features first made them usable.",
        "The plain LSTM is enough here: the per-step Dense projection of td_dense_lstm added parameters and time "
        "but no accuracy ({gain:+.1%}).",
    ),
    (
        "embedding_lstm",
        "embedding_bilstm",
        "Reading both directions helped ({gain:+.1%}): the deciding tokens sit far from the end, where a "
        "left-to-right LSTM must carry them through every later step, while the backward pass reads them last. "
        "It needs the whole sequence, so it cannot serve per-step sessions.",
        "The bidirectional LSTM gained nothing worth its cost ({gain:+.1%}): the left-to-right embedding_lstm sees "
        "enough, costs about half the recurrent work and can stream with sessions.",
    ),
)


def _explain_pairs(by_name: dict[str, Entry]) -> list[str]:
    """What the per-step projection and the second direction each bought, where both sides ran."""
    lines = []
    for simpler, richer, helped, not_helped in _PAIRS:
        if simpler in by_name and richer in by_name:
            gain = by_name[richer].val_accuracy - by_name[simpler].val_accuracy
            lines.append((helped if gain >= NEGLIGIBLE else not_helped).format(gain=gain))
    return lines


def plan_comparison(
    index: ModelIndex,
    report_path: Callable[[str], Path],
    *,
    architectures: list[str] | None,
    overrides: dict[str, int],
    sequences: Sequence[Sequence[float]] | None,
    labels: Sequence[int] | None,
    dataset: str | None,
    settings: FitSettings,
    keep_best_as: str | None,
) -> tuple[Work, int]:
    """Validate a comparison up front and return its work and total epoch count.

    ``report_path(job_id)`` tells where the job draws its learning curves.
    """
    if settings.validation_split <= 0:
        raise InvalidInput(
            "A comparison ranks by validation metrics: give validation_split > 0.",
            field="validation_split",
            expected="> 0",
            got=settings.validation_split,
        )
    if dataset is not None:
        kind = get_dataset(dataset).input_kind
    else:
        assert sequences is not None, "the request schema demands data or dataset"
        kind = data_kind(sequences)
    chosen, skipped = choose(architectures, kind)
    candidates = []
    for arch in chosen:
        params, data = prepare_training(
            arch, overrides, sequences=sequences, labels=labels, dataset=dataset, settings=settings
        )
        candidates.append(Candidate(arch, data, params))

    def work(context: JobContext) -> None:
        entries: list[Entry] = []
        results: dict[str, FitResult] = {}
        for position, candidate in enumerate(candidates):
            name = candidate.arch.name
            offset = position * settings.epochs

            def progress(epoch: int, history: dict[str, list[float]], offset: int = offset) -> None:
                context.update(epoch=offset + epoch, history=history)

            if name == "stateful_lstm" and "lstm" in results:
                # Same network, same seed, same data: training it again would reproduce lstm exactly.
                result = results["lstm"]
                note = "Trained as lstm (identical network and seed); differs only in how it is served."
                context.update(epoch=offset + settings.epochs)
            else:
                result = fit(candidate.arch, candidate.params, candidate.data, settings, context, progress)
                note = None
            results[name] = result
            entries.append(
                Entry(
                    architecture=name,
                    val_accuracy=result.history["val_accuracy"][-1],
                    val_loss=result.history["val_loss"][-1],
                    param_count=int(result.model.count_params()),
                    train_seconds=round(result.seconds, 3),
                    predict_ms_per_sequence=round(_predict_ms_per_sequence(result, candidate.params.vocab_size), 4),
                    note=note,
                    history=result.history,
                )
            )
            context.update(report={"leaderboard": [e.public() for e in rank(entries)], "complete": False})
        leaderboard = rank(entries)
        choice = recommended(leaderboard)
        draw_learning_curves({e.architecture: e.history for e in entries}, report_path(context.job_id))
        report: dict[str, Any] = {
            "leaderboard": [e.public() for e in leaderboard],
            "recommended": choice.architecture,
            "recommendation": recommend(leaderboard, skipped, settings.epochs),
            "skipped": skipped,
            "data": candidates[0].data.source,
            "settings": asdict(settings),
            "complete": True,
        }
        if keep_best_as is not None:
            winner = next(c for c in candidates if c.arch.name == choice.architecture)
            meta = index.add(
                keep_best_as,
                winner.arch,
                winner.params,
                artifact_for(winner.arch, winner.params, results[winner.arch.name].model),
                metrics={k: v[-1] for k, v in results[winner.arch.name].history.items() if v},
                source=winner.data.source,
                extra={"compare_job": context.job_id},
            )
            report["kept_as"] = {"model": meta.name, "version": meta.version, "architecture": meta.architecture}
            context.update(version=meta.version)
        context.update(report=report)

    return work, settings.epochs * len(candidates)
