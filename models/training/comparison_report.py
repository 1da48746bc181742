"""A comparison's report: its types, the ranking and the advice, in the language of the task.

Plain dataclasses with no framework and no Keras: the service publishes them as the typed ``report`` of
``GET /jobs/{id}`` (pydantic reads dataclasses, so the schema in ``/openapi.json`` is these classes), and
the page and the CLI read them back through attributes.

Which metric ranks and how the advice speaks come from one small table per task (``SCORING``):
classification is ranked by accuracy (higher is better), regression by mean absolute error with the root
mean squared error beside it (lower is better).

Example::

    >>> rows = [LeaderboardRow("lstm", 0.7, 0.6, 500, 1.0, 0.01), LeaderboardRow("td_dense_lstm", 0.9, 0.3, 2500, 1.0, 0.01)]
    >>> [row.architecture for row in rank(rows, SCORING["binary"], "val_accuracy")]
    ['td_dense_lstm', 'lstm']
"""

from dataclasses import dataclass, field
from typing import Any

from models.tasks import Task



@dataclass(frozen=True)
class Scoring:
    """How one task is ranked and spoken of."""

    #: The metric that ranks (a key of the fit's history, without ``val_``).
    metric: str
    #: Metrics shown beside it, in order (the loss last).
    also: tuple[str, ...]
    higher_is_better: bool
    #: What the metric is called in a sentence.
    label: str
    #: Gaps smaller than this are noise on small validation sets: accuracy points, or a share of the error.
    negligible: float
    #: What "better" means in a sentence ("accuracy", "lower error").
    better: str
    #: A model that does not beat the trivial answer by this much (same units as ``negligible``) learned little.
    learned: float
    #: The trivial answer ``baseline`` is measured against, for the "learned little" sentence.
    trivial: str

    def value(self, score: float) -> str:
        """A score as a sentence says it: ``87.5%`` for accuracy, ``0.123`` for an error."""
        return f"{score:.1%}" if self.higher_is_better else f"{score:.4g}"

    def gain(self, richer: float, simpler: float) -> float:
        """How much better ``richer`` scored than ``simpler``: accuracy points, or the share of error removed."""
        if self.higher_is_better:
            return richer - simpler
        return (simpler - richer) / simpler if simpler > 0 else 0.0

    def say_gain(self, gain: float) -> str:
        """A gain in words, ahead of the simpler model's name: ``+25.0% over``, ``12% lower error than``."""
        if self.higher_is_better:
            return f"{gain:+.1%} over"
        return f"{gain:.0%} lower error than" if gain >= 0 else f"{-gain:.0%} higher error than"

    def order_key(self, score: float) -> float:
        """Sort key, best first (scores rounded: differences below 1e-4 are ties)."""
        return -round(score, 4) if self.higher_is_better else round(score, 4)


#: The per-task table: every task-dependent word and number of ranking and advice comes from here.
_CLASSIFICATION = Scoring(
    metric="accuracy",
    also=("loss",),
    higher_is_better=True,
    label="accuracy",
    negligible=0.02,
    better="accuracy",
    learned=0.10,
    trivial="always answering the most frequent class",
)
SCORING: dict[Task, Scoring] = {
    "binary": _CLASSIFICATION,
    "multiclass": _CLASSIFICATION,
    "regression": Scoring(
        metric="mae",
        also=("rmse", "loss"),
        higher_is_better=False,
        label="MAE",
        negligible=0.05,
        better="lower error",
        learned=0.10,
        trivial="always answering the training mean",
    ),
}


def scoring_for(task: Task) -> Scoring:
    """The table row of ``task``."""
    return SCORING[task]


@dataclass
class LeaderboardRow:
    """One architecture's result. ``val_accuracy``/``val_loss`` are kept for clients of the first report;
    ``metrics`` holds the last epoch of every metric the fit recorded (``val_`` ones only with validation)."""

    architecture: str
    val_accuracy: float | None
    val_loss: float | None
    param_count: int
    train_seconds: float
    predict_ms_per_sequence: float
    note: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Reports written before ``metrics`` existed carry only the two validation columns.
        if not self.metrics:
            known = {"val_accuracy": self.val_accuracy, "val_loss": self.val_loss}
            self.metrics = {key: value for key, value in known.items() if value is not None}

    def metric(self, name: str) -> float | None:
        """The last epoch's value of ``name`` (``val_mae``, ``accuracy``, ...), or ``None`` if not recorded."""
        return self.metrics.get(name)


@dataclass
class KeptVersion:
    """The model version the winner was stored as (``keep_best_as``)."""

    model: str
    version: int
    architecture: str


@dataclass
class ComparisonReport:
    """A comparison's result: the leaderboard best first, the recommendation and what was left out.

    While the job runs, ``complete`` is false and only ``leaderboard`` is filled (the architectures done so far).
    """

    leaderboard: list[LeaderboardRow]
    complete: bool = True
    task: Task = "binary"
    #: The history key that ranks: ``val_accuracy``, ``val_mae``, or without validation ``accuracy``, ``mae``.
    ranked_by: str = "val_accuracy"
    #: False when the training set was too small to hold any sequence out; then training metrics rank.
    validated: bool = True
    #: The ranking metric of the trivial answer (``Scoring.trivial``) on the same sequences.
    baseline: float | None = None
    recommended: str | None = None
    recommendation: str = ""
    #: Architecture -> why it was left out; each distinct reason is said once by ``skipped_reasons``.
    skipped: dict[str, str] = field(default_factory=dict)
    data: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    kept_as: KeptVersion | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The metric columns a table shows, ranking metric first (``val_`` ones when validated)."""
        scoring = scoring_for(self.task)
        prefix = "val_" if self.validated else ""
        return tuple(prefix + name for name in (scoring.metric, *scoring.also))

    def skipped_reasons(self) -> list[tuple[list[str], str]]:
        """Each distinct reason once, with every architecture it left out."""
        grouped: dict[str, list[str]] = {}
        for name, reason in self.skipped.items():
            grouped.setdefault(reason, []).append(name)
        return [(names, reason) for reason, names in grouped.items()]


def rank(rows: list[LeaderboardRow], scoring: Scoring, ranked_by: str) -> list[LeaderboardRow]:
    """Best first by ``ranked_by`` in the task's direction, then lower loss, then fewer parameters."""
    loss = "val_loss" if ranked_by.startswith("val_") else "loss"

    def key(row: LeaderboardRow) -> tuple[float, float, int]:
        score, row_loss = row.metric(ranked_by), row.metric(loss)
        return (
            scoring.order_key(score) if score is not None else float("inf"),
            row_loss if row_loss is not None else float("inf"),
            row.param_count,
        )

    return sorted(rows, key=key)


def recommended(leaderboard: list[LeaderboardRow], scoring: Scoring, ranked_by: str) -> LeaderboardRow:
    """The smallest model whose gap to the best is negligible: on small validation sets, less is safer."""
    best = leaderboard[0].metric(ranked_by)
    assert best is not None, "a ranked leaderboard has its metric"
    close = [
        row
        for row in leaderboard
        if (score := row.metric(ranked_by)) is not None and scoring.gain(best, score) < scoring.negligible
    ]
    return min(close, key=lambda row: row.param_count)


#: (simpler, richer, what a gain of the richer one means, what no gain means); ``{gain}`` is filled in by
#: ``Scoring.say_gain`` and ``{better}`` by ``Scoring.better``.
_PAIRS = (
    (
        "lstm",
        "td_dense_lstm",
        "The per-step Dense projection helped ({gain} lstm): raw values per step were hard for the small LSTM "
        "to use, and lifting each step into more features first made them usable.",
        "The plain LSTM is enough here: the per-step Dense projection of td_dense_lstm added parameters and time "
        "but no {better} ({gain} lstm).",
    ),
    (
        "embedding_lstm",
        "embedding_bilstm",
        "Reading both directions helped ({gain} embedding_lstm): the deciding tokens sit far from the end, where "
        "a left-to-right LSTM must carry them through every later step, while the backward pass reads them last. "
        "It needs the whole sequence, so it cannot serve per-step sessions.",
        "The bidirectional LSTM gained nothing worth its cost ({gain} embedding_lstm): the left-to-right "
        "embedding_lstm sees enough, costs about half the recurrent work and can stream with sessions.",
    ),
)


def recommend(report: ComparisonReport, epochs: int, n_sequences: int, validation_split: float) -> str:
    """Plain-English reading of a ranked report, each thing said once.

    Skipped architectures are not repeated here: the report lists each reason once (``skipped_reasons``).
    """
    scoring = scoring_for(report.task)
    board, ranked_by = report.leaderboard, report.ranked_by
    best = board[0]
    choice = recommended(board, scoring, ranked_by)
    best_score = best.metric(ranked_by)
    assert best_score is not None
    split = "validation" if report.validated else "training"
    lines = [
        f"Best: {best.architecture} with {split} {scoring.label} {scoring.value(best_score)} after {epochs} epochs."
    ]
    if not report.validated:
        lines.append(
            f"No validation: {n_sequences} sequences with validation_split {validation_split:g} leave none to hold "
            f"out, so this ranks by training {scoring.label}, which rewards memorising as much as learning; give "
            "more sequences or a larger validation_split before trusting the order."
        )
    if choice is not best:
        choice_score = choice.metric(ranked_by)
        assert choice_score is not None
        lines.append(
            f"{choice.architecture} scores {scoring.value(choice_score)} with {choice.param_count} parameters "
            f"instead of {best.param_count}; on this much data that gap is noise, so the recommendation is "
            f"{choice.architecture} unless more data confirms the difference."
        )
    if report.baseline is not None and scoring.gain(best_score, report.baseline) < scoring.learned:
        lines.append(
            f"No architecture learned this task well ({scoring.trivial} scores {scoring.value(report.baseline)}), "
            "so the ranking says little: train for more epochs or with more units before concluding which fits."
        )
    else:
        lines += _explain_pairs(board, scoring, ranked_by)
    if any(row.architecture == "stateful_lstm" for row in board):
        lines.append(
            "Choose stateful_lstm over lstm when values arrive one at a time and you want a prediction after each "
            "without resending history (sessions give that to every unidirectional architecture here)."
        )
    return " ".join(lines)


def _explain_pairs(board: list[LeaderboardRow], scoring: Scoring, ranked_by: str) -> list[str]:
    """What the per-step projection and the second direction each bought, where both sides ran."""
    scores = {row.architecture: row.metric(ranked_by) for row in board}
    lines = []
    for simpler, richer, helped, not_helped in _PAIRS:
        low, high = scores.get(simpler), scores.get(richer)
        if low is not None and high is not None:
            gain = scoring.gain(high, low)
            text = helped if gain >= scoring.negligible else not_helped
            lines.append(text.format(gain=scoring.say_gain(gain), better=scoring.better))
    return lines
