"""``GET /``: one server-rendered HTML page showing the models, recent jobs, the five architectures and the
latest comparison. No template engine and no JS framework: ``string.Template`` for the frame, and every
value passes through ``esc`` (``html.escape``) on its way into the markup.

Example::

    >>> esc('<script>alert("x")</script>')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'
"""

import html

import anyio.from_thread
from collections.abc import Iterable, Mapping, Sequence
from string import Template
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from models.architectures import ARCHITECTURES
from models.errors import NotFound, Unavailable
from models.training.jobs import Job
from service.deps import IndexDep, JobsDep, SessionsDep
from service.schemas import comparison_report

router = APIRouter(include_in_schema=False)

#: How many jobs the page lists, newest first.
RECENT_JOBS = 15
#: Seconds between reloads while a job is queued or running.
REFRESH_S = 3
ACTIVE = ("queued", "running")


def esc(value: Any) -> str:
    """Text safe to put in HTML content and in quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def _table(table_id: str, headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """A table whose cells are already-escaped HTML fragments."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _status(status: str) -> str:
    return f'<span class="status {esc(status)}">{esc(status)}</span>'


def models_html(models: Sequence[Mapping[str, Any]]) -> str:
    rows = (
        (
            f"<code>{esc(m['name'])}</code>",
            esc(m["architecture"]),
            esc(m.get("task") or "binary"),
            esc(m["version"]),
            _num((m.get("metrics") or {}).get("val_accuracy")),
            esc(m.get("backend") or "–"),
        )
        for m in models
    )
    headers = ("name", "architecture", "task", "version", "val_accuracy", "backend")
    return _table("models", headers, rows, "No models yet.")


def task_text(task: str, n_features: int, n_classes: int | None, n_outputs: int | None) -> str:
    """A model's head and input in a few words: ``multiclass (4 classes), 3 features``."""
    head = {"multiclass": f"multiclass ({n_classes} classes)", "regression": f"regression ({n_outputs} values)"}.get(task, task)
    return head if n_features == 1 else f"{head}, {n_features} features"


def jobs_html(jobs: Sequence[Job]) -> str:
    rows = (
        (
            f"<code>{esc(j.job_id)}</code>",
            esc(j.kind),
            esc(j.model or "–"),
            _status(j.status),
            f"{esc(j.epoch)}/{esc(j.epochs)}",
            esc((j.created_at or "")[:19].replace("T", " ")),
        )
        for j in jobs
    )
    return _table("jobs", ("id", "kind", "model", "status", "epoch", "created (UTC)"), rows, "No jobs yet.")


def architectures_html() -> str:
    rows = (
        (f"<code>{esc(a.name)}</code>", esc(a.input_kind), "yes" if a.supports_sessions else "no", esc(a.when_to_use))
        for a in ARCHITECTURES.values()
    )
    return _table("architectures", ("name", "input", "sessions", "when to use"), rows, "")


def compare_html(job: Job | None) -> str:
    """The leaderboard, recommendation and learning curves of a finished comparison."""
    if job is None or not job.report:
        return '<p class="empty">No finished comparison yet: <code>POST /compare</code> or <code>lstm-serve compare</code>.</p>'
    report = comparison_report(job.report)
    columns = report.columns
    rows = (
        (
            esc(rank),
            f"<code>{esc(row.architecture)}</code>"
            + (' <span class="pick">recommended</span>' if row.architecture == report.recommended else ""),
            *(_num(row.metric(column), 4 if column.endswith("loss") else 3) for column in columns),
            _num(row.param_count),
            _num(row.train_seconds, 1),
            _num(row.predict_ms_per_sequence, 3),
            esc(row.note or ""),
        )
        for rank, row in enumerate(report.leaderboard, start=1)
    )
    table = _table(
        "leaderboard", ("#", "architecture", *columns, "params", "train s", "ms/seq", "note"), rows, "Empty leaderboard."
    )
    skipped = "".join(
        f"<li>{', '.join(f'<code>{esc(name)}</code>' for name in names)}: {esc(reason)}</li>"
        for names, reason in report.skipped_reasons()
    )
    kept = report.kept_as
    kept_html = (
        f"<p>Kept <code>{esc(kept.architecture)}</code> as model <code>{esc(kept.model)}</code> "
        f"version {esc(kept.version)}.</p>"
        if kept
        else ""
    )
    plot = f"/jobs/{quote(job.job_id, safe='')}/report.png"
    return (
        f'<p class="meta">Job <code>{esc(job.job_id)}</code>, data {esc(report.data or "–")}, '
        f"finished {esc((job.finished_at or '')[:19].replace('T', ' '))} UTC</p>"
        f"{table}"
        f'<p id="recommendation" class="recommendation">{esc(report.recommendation)}</p>'
        f"{kept_html}"
        + (f'<ul class="skipped">{skipped}</ul>' if skipped else "")
        + f'<img id="report-plot" src="{esc(plot)}" alt="Learning curves of job {esc(job.job_id)}">'
    )


PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lstm-serve</title>
<style>
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2933; background: #f5f7fa; }
  header { background: #243b53; color: #fff; padding: 14px 28px; display: flex; align-items: baseline; gap: 16px; }
  header h1 { margin: 0; font-size: 22px; }
  header span { color: #bcccdc; font-size: 14px; }
  header a { color: #9fb3c8; margin-left: auto; font-size: 14px; }
  main { max-width: 1120px; margin: 0 auto; padding: 8px 28px 40px; }
  section { background: #fff; border: 1px solid #d9e2ec; border-radius: 8px; padding: 4px 20px 16px; margin-top: 20px; }
  h2 { font-size: 17px; margin: 14px 0 10px; color: #243b53; }
  table { border-collapse: collapse; width: 100%; font-size: 14px; }
  th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e4e7eb; vertical-align: top; }
  th { background: #f0f4f8; color: #486581; font-weight: 600; }
  tbody tr:hover { background: #f8fafc; }
  code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; }
  .status { padding: 1px 8px; border-radius: 10px; font-size: 12px; background: #e4e7eb; }
  .status.succeeded { background: #c6f7e2; color: #014d40; }
  .status.running, .status.queued { background: #fff3c4; color: #8d2b0b; }
  .status.failed { background: #ffe3e3; color: #8a041a; }
  .status.cancelled { background: #e4e7eb; color: #52606d; }
  .pick { background: #dceefb; color: #0b4f71; border-radius: 10px; padding: 1px 8px; font-size: 12px; }
  .recommendation { background: #f0f4f8; border-left: 4px solid #2680c2; padding: 10px 14px; margin: 14px 0; }
  .empty, .meta { color: #627d98; }
  .skipped { color: #627d98; font-size: 14px; }
  img { max-width: 100%; border: 1px solid #d9e2ec; border-radius: 6px; margin-top: 8px; }
</style>
$refresh
</head>
<body>
<header><h1>lstm-serve</h1><span>$summary</span><a href="/docs">API docs</a></header>
<main>
<section id="compare-section"><h2>Latest comparison</h2>$compare</section>
<section><h2>Models</h2>$models</section>
<section><h2>Live sessions</h2>$sessions</section>
<section><h2>Recent jobs</h2>$jobs</section>
<section><h2>Architectures</h2>$architectures</section>
</main>
</body>
</html>
""")

#: While a job is active the page reloads itself; a tiny script, so a finished page stays still.
REFRESH_SCRIPT = f"<script>setTimeout(function () {{ location.reload(); }}, {REFRESH_S * 1000});</script>"


def sessions_html(live: Mapping[str, int] | None) -> str:
    """Live sessions by model; ``None`` when the session store could not say."""
    if live is None:
        return '<p class="empty">The session store did not answer.</p>'
    rows = ((esc(model), esc(count)) for model, count in sorted(live.items()))
    return _table("sessions", ("model", "live sessions"), rows, "No live sessions.")


def render_page(
    models: Sequence[Mapping[str, Any]],
    jobs: Sequence[Job],
    latest_compare: Job | None,
    live_sessions: Mapping[str, int] | None = None,
) -> str:
    """The whole page from plain data (``jobs`` newest first; ``live_sessions`` by model, ``None`` when unknown);
    pure, so it can be tested on its own."""
    active = sum(j.status in ACTIVE for j in jobs)
    summary = f"{len(models)} model{'s' * (len(models) != 1)}, {active} active job{'s' * (active != 1)}"
    return PAGE.substitute(
        refresh=REFRESH_SCRIPT if active else "",
        summary=esc(summary),
        compare=compare_html(latest_compare),
        models=models_html(models),
        jobs=jobs_html(jobs),
        sessions=sessions_html(live_sessions),
        architectures=architectures_html(),
    )


@router.get("/", response_class=HTMLResponse)
def index(model_index: IndexDep, jobs: JobsDep, sessions: SessionsDep) -> HTMLResponse:
    """The dashboard page."""
    models = []
    for name in model_index.names():
        try:
            info = model_index.info(name)
        except NotFound:  # deleted meanwhile
            continue
        meta = info.latest
        models.append(
            {
                "name": meta.name,
                "architecture": meta.architecture,
                "version": meta.version,
                "metrics": meta.metrics,
                "backend": meta.extra.get("backend"),
                "task": task_text(meta.task, meta.n_features, meta.n_classes, meta.n_outputs),
            }
        )
    newest_first = list(reversed(jobs.list()))
    latest_compare = next(
        (
            j
            for j in newest_first
            if j.kind == "compare" and j.status == "succeeded" and j.report and comparison_report(j.report).complete
        ),
        None,
    )
    try:
        live: dict[str, int] | None = anyio.from_thread.run(sessions.live_by_model)
    except Unavailable:
        live = None
    return HTMLResponse(render_page(models, newest_first[:RECENT_JOBS], latest_compare, live))
