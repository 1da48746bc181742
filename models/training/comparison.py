""""Which architecture fits my data?": train several on the same data and report on them.

Every candidate gets the same data (loaded or generated once per comparison), split, seed and epoch
budget. The report, its ranking and its advice are ``comparison_report``; this module runs the candidates.
"""

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.architectures import ARCHITECTURES, Architecture, ArchParams, InputKind, get_architecture
from models.errors import InvalidInput
from models.training.jobs import JobContext, Work
from models.training.learning_curves import draw_learning_curves
from models.serving.engines import export_engine
from models.serving.model_index import ModelIndex
from models.training.comparison_report import (
    ComparisonReport,
    KeptVersion,
    LeaderboardRow,
    Scoring,
    rank,
    recommend,
    recommended,
    scoring_for,
)
from models.training.fitting import (
    FitResult,
    FitSettings,
    RawData,
    TrainingData,
    artifact_for,
    fit,
    prepare_training,
    split_indices,
)


@dataclass
class Candidate:
    """One architecture in a comparison, with its data ready."""

    arch: Architecture
    data: TrainingData
    params: ArchParams


def data_kind(sequences: Sequence[Sequence[float]]) -> InputKind:
    """Whole non-negative numbers everywhere read as token ids; anything else (rows of features too) is float data."""
    for seq in sequences:
        for value in seq:
            if isinstance(value, list) or value < 0 or value != int(value):
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


def baseline_score(scoring: Scoring, y_train: np.ndarray, y_eval: np.ndarray) -> float:
    """The ranking metric of the trivial answer on ``y_eval``: the most frequent training class for
    accuracy, the training mean for an error."""
    if scoring.metric == "accuracy":
        classes, counts = np.unique(y_train, return_counts=True)
        return float(np.mean(y_eval == classes[counts.argmax()]))
    return float(np.mean(np.abs(y_eval - y_train.mean())))


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

    The data is loaded (or a built-in dataset generated) once and shaped for each candidate. Their task
    (``params.task``, by default the dataset's) picks the ranking metric and the advice's words (``comparison_report.SCORING``); ``report_path(job_id)`` tells
    where the job draws its learning curves.
    """
    if settings.validation_split <= 0:
        raise InvalidInput(
            "A comparison ranks by validation metrics: give validation_split > 0.",
            field="validation_split",
            expected="> 0",
            got=settings.validation_split,
        )
    raw = RawData.load(sequences=sequences, labels=labels, dataset=dataset, seed=settings.seed)
    kind = raw.dataset.input_kind if raw.dataset is not None else data_kind(raw.sequences)
    chosen, skipped = choose(architectures, kind)
    candidates = []
    for arch in chosen:
        params, data = prepare_training(arch, overrides, raw, settings)
        candidates.append(Candidate(arch, data, params))
    task = candidates[0].params.task
    scoring = scoring_for(task)
    n_sequences = len(candidates[0].data.y)
    train_idx, val_idx = split_indices(n_sequences, settings)
    validated = len(val_idx) > 0
    # Too few sequences to hold any out: rank by the training metric, and the advice says so.
    ranked_by = ("val_" if validated else "") + scoring.metric
    y = candidates[0].data.y
    baseline = baseline_score(scoring, y[train_idx], y[val_idx] if validated else y[train_idx])

    def report_of(rows: list[LeaderboardRow], complete: bool) -> ComparisonReport:
        return ComparisonReport(
            leaderboard=rank(rows, scoring, ranked_by),
            complete=complete,
            task=task,
            ranked_by=ranked_by,
            validated=validated,
            baseline=round(baseline, 6),
            skipped=skipped,
            data=raw.source,
            settings=asdict(settings),
        )

    def work(context: JobContext) -> None:
        rows: list[LeaderboardRow] = []
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
            metrics = result.final_metrics()
            rows.append(
                LeaderboardRow(
                    architecture=name,
                    val_accuracy=metrics.get("val_accuracy"),
                    val_loss=metrics.get("val_loss"),
                    param_count=int(result.model.count_params()),
                    train_seconds=round(result.seconds, 3),
                    predict_ms_per_sequence=round(_predict_ms_per_sequence(result, candidate.params.vocab_size), 4),
                    note=note,
                    metrics=metrics,
                )
            )
            context.update(report=asdict(report_of(rows, complete=False)))
        report = report_of(rows, complete=True)
        choice = recommended(report.leaderboard, scoring, ranked_by)
        report.recommended = choice.architecture
        report.recommendation = recommend(report, settings.epochs, n_sequences, settings.validation_split)
        draw_learning_curves(
            {name: result.history for name, result in results.items()},
            report_path(context.job_id),
            metrics=("loss", scoring.metric),
        )
        if keep_best_as is not None:
            winner = next(c for c in candidates if c.arch.name == choice.architecture)
            meta = index.add(
                keep_best_as,
                winner.arch,
                winner.params,
                artifact_for(winner.arch, winner.params, results[winner.arch.name].model),
                metrics=results[winner.arch.name].final_metrics(),
                source=winner.data.source,
                extra={"compare_job": context.job_id},
            )
            report.kept_as = KeptVersion(meta.name, meta.version, meta.architecture)
            context.update(version=meta.version)
        context.update(report=asdict(report))

    return work, settings.epochs * len(candidates)
