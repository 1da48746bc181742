"""The peer benchmark's Markdown: a table per server like the issue's, lstm-serve against the best peer,
then every cell with its range. Pure functions of the measured cells, so a unit test can feed them."""

from __future__ import annotations

import platform
import re

from bench.peers.contenders import Contender
from bench.run import MAX_LEN, TABLE_HEADER, UNITS, Cell, environment_lines, ratio, table_row

Cells = dict[tuple[str, int], Cell]
_NUMBERS = re.compile(r"-?[\d.]+(?:,-?[\d.]+){3,}")


def best_peer(cells: Cells, contenders: list[Contender], connections: int) -> Contender | None:
    """The peer (not lstm-serve, not a floor) with the most req/s at ``connections``; None if none ran."""
    measured = [c for c in contenders if c.kind == "peer" and _cell(cells, c, connections)]
    return max(measured, key=lambda c: cells[(c.label, connections)].rps, default=None)


def summary_table(cells: Cells, contenders: list[Contender], connections: list[int]) -> list[str]:
    """One row per server: req/s at every connection count, p50 at the fewest, p99 at the most, server CPU
    per request at the fewest and the most, and the errors of every run."""
    low, high = min(connections), max(connections)
    columns = [
        *(f"c={c} req/s" for c in connections), f"c={low} p50 ms", f"c={high} p99 ms",
        f"CPU ms/req c={low}", f"CPU ms/req c={high}", "errors",
    ]
    lines = ["| server | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * (len(columns) - 1) + " --- |"]
    for contender in contenders:
        row = [_cell(cells, contender, c) for c in connections]
        if not any(row):
            continue
        at_low, at_high = _cell(cells, contender, low), _cell(cells, contender, high)
        errors = sum(_error_count(cell) for cell in row if cell)
        values = [
            *(f"{cell.rps:,.0f}" if cell else "-" for cell in row),
            f"{at_low.p50:.2f}" if at_low else "-",
            f"{at_high.p99:.1f}" if at_high else "-",
            f"{at_low.cpu_ms:.3f}" if at_low else "-",
            f"{at_high.cpu_ms:.3f}" if at_high else "-",
            str(errors),
        ]
        name = f"**{contender.label}**" if contender.kind == "lstm-serve" else contender.label
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return lines


def ratio_table(cells: Cells, contenders: list[Contender], connections: list[int]) -> list[str]:
    """Per connection count: the best peer and each lstm-serve row's req/s and CPU per request against it."""
    ours = [c for c in contenders if c.kind == "lstm-serve"]
    lines = [
        "| connections | best peer | its req/s | "
        + " | ".join(f"{o.label} / best peer, req/s | CPU/req" for o in ours) + " |",
        "| ---: | --- | ---: |" + " ---: | ---: |" * len(ours),
    ]
    for c in connections:
        best = best_peer(cells, contenders, c)
        if best is None:
            continue
        top = cells[(best.label, c)]
        values = []
        for o in ours:
            cell = _cell(cells, o, c)
            values += [ratio(cell.rps, top.rps), ratio(cell.cpu_ms, top.cpu_ms)] if cell else ["-", "-"]
        lines.append(f"| {c} | {best.label} | {top.rps:,.0f} | " + " | ".join(values) + " |")
    return lines


def render_peers(
    cells: Cells,
    contenders: list[Contender],
    connections: list[int],
    meta: dict[str, str],
    reference: float | None,
    answers: dict[str, float],
) -> str:
    """The whole report: setup, the summary, the ratios, every cell, the answers checked against Keras."""
    lines = [
        "# lstm-serve against other servers",
        "",
        *environment_lines(meta),
        f"- Python {platform.python_version()}, {meta['wrk']}; loopback; while one server is measured every "
        "other one is stopped (SIGSTOP to its process tree)",
        f"- Load: closed-loop wrk, {meta['duration']} s per run, {meta['repeats']} interleaved round(s); each cell "
        "is the median over rounds. Server CPU ms/req: user+system CPU time of the server's process tree "
        "(worker processes included) during the run, divided by its requests",
        f"- Model: `lstm`, units {UNITS}, max_len {MAX_LEN}, trained through lstm-serve's API; the peers run "
        "the `predict.onnx` lstm-serve exported (onnxruntime, 1 intra-op thread). One sequence per request",
        "- Servers:",
        *(f"  - {c.label}: {c.setup}; `POST {c.path}` `{_abridged(c.body_json)}`" for c in contenders),
        "",
        *summary_table(cells, contenders, connections),
        "",
        "Against the best peer at each connection count (req/s: above 1 is faster; CPU per request: below 1 "
        "is cheaper):",
        "",
        *ratio_table(cells, contenders, connections),
        "",
        "Every cell (median over rounds; req/s range in the last column):",
        "",
        *TABLE_HEADER,
        *(
            table_row(c.label, n, cells[(c.label, n)])
            for c in contenders for n in connections if _cell(cells, c, n)
        ),
    ]
    if reference is not None:
        shown = ", ".join(f"{label} {p:.7f}" for label, p in answers.items())
        worst = max((abs(p - reference) for p in answers.values()), default=0.0)
        lines += [
            "",
            f"Answers checked before timing: Keras {reference:.7f}; {shown} (largest difference {worst:.1e}, "
            "allowed 1e-5).",
        ]
    return "\n".join(lines) + "\n"


def _cell(cells: Cells, contender: Contender, connections: int) -> Cell | None:
    cell = cells.get((contender.label, connections))
    return cell if cell is not None and cell.runs else None


def _error_count(cell: Cell) -> int:
    return sum(r.status_errors + r.socket_errors for r in cell.runs)


def _abridged(body: str) -> str:
    """The body with its run of numbers cut to three: ``{"sequences":[[0.0,0.2,0.4,...]]}``."""
    return _NUMBERS.sub(lambda m: ",".join(m.group().split(",")[:3]) + ",...", body)
