"""``lstm-serve``: a thin command-line client of the HTTP API (the contract is ``docs/api.md``).

Every subcommand talks to a running service over HTTP (``--url``, default ``$LSTM_SERVE_URL`` or
http://127.0.0.1:8000), except ``serve``, which runs the service in this process, and ``worker``, which runs
queued training jobs (``JOB_QUEUE``). The module imports neither ``models`` nor Keras, so the client starts
fast; ``compare`` alone loads the report types (``models.training.comparison_report``, plain dataclasses).

Example::

    $ lstm-serve train mine --architecture lstm --dataset noisy_trend --epochs 3
    $ echo '[[0.1, 0.2, 0.3]]' | lstm-serve predict mine
    $ lstm-serve compare --dataset noisy_trend --epochs 2 --plot curves.png

Exit status: 0 on success, 1 when a job fails or is cancelled, 2 on an error answer from the server or a
bad argument, 3 when the service cannot be reached, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from models.training.comparison_report import ComparisonReport

DEFAULT_URL = "http://127.0.0.1:8000"
POLL_INTERVAL_S = 0.25
FINISHED = ("succeeded", "failed", "cancelled")
PARAM_NAMES = ("max_len", "units", "vocab_size", "embedding_dim", "dense_units")

EXIT_JOB_FAILED = 1
EXIT_ERROR = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class ApiError(Exception):
    """An error answer from the service: HTTP status plus the ``{"error": {code, message}}`` body."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, f"http_{response.status_code}", response.text.strip()[:200] or response.reason_phrase)
        if isinstance(error, str):  # the TF Serving / KServe shape
            return cls(response.status_code, f"http_{response.status_code}", error)
        return cls(response.status_code, str(error.get("code", "error")), str(error.get("message", "")), error.get("details"))

    def __str__(self) -> str:
        return f"{self.code} (HTTP {self.status}): {self.message}"


class UsageError(Exception):
    """A bad argument or input file, found before anything was sent."""


class Api:
    """The few HTTP calls the CLI makes; every error answer becomes an ``ApiError``."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 60.0) -> None:
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()

    def stream(self, path: str) -> ClientConnection:
        """A WebSocket to ``path`` on the service, with the same key; ``OSError``/``InvalidHandshake`` if refused."""
        return ws_connect(re.sub(r"^http", "ws", self.url) + path, additional_headers=self.headers, open_timeout=10)

    def close(self) -> None:
        self.http.close()


# --------------------------------------------------------------------------------------------- helpers


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _last(history: dict[str, list[float]], key: str) -> float | None:
    values = history.get(key) or []
    return values[-1] if values else None


def _read_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where} is not valid JSON: {exc}") from None


def _training_source(args: argparse.Namespace) -> dict[str, Any]:
    """``{"dataset": name}`` or ``{"data": {"sequences", "labels"}}`` from ``--dataset`` / ``--data FILE``."""
    if args.dataset:
        return {"dataset": args.dataset}
    path = Path(args.data)
    try:
        data = _read_json(path.read_text(), str(path))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict) or "sequences" not in data or "labels" not in data:
        raise UsageError(f'{path} must hold {{"sequences": [[...], ...], "labels": [0, 1, ...]}}')
    return {"data": {"sequences": data["sequences"], "labels": data["labels"]}}


def _fit_body(args: argparse.Namespace) -> dict[str, Any]:
    body = _training_source(args)
    params = {name: getattr(args, name) for name in PARAM_NAMES if getattr(args, name) is not None}
    if params:
        body["params"] = params
    for name in ("epochs", "batch_size", "validation_split", "seed"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    return body


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.fields[title]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=out,
    )


def _epoch_text(job: dict[str, Any]) -> str:
    history = job.get("history") or {}
    parts = [f"{job['status']}"]
    loss, val_accuracy = _last(history, "loss"), _last(history, "val_accuracy")
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if val_accuracy is not None:
        parts.append(f"val_accuracy {val_accuracy:.3f}")
    return "  ".join(parts)


def follow_job(api: Api, job_id: str, title: str, describe: Callable[[dict[str, Any]], str] = _epoch_text) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` with a progress bar until the job finishes; Ctrl-C cancels it."""
    try:
        with _progress() as progress:
            task = progress.add_task("queued", total=None, title=title)
            while True:
                job = api.json("GET", f"/jobs/{job_id}")
                progress.update(task, total=job["epochs"], completed=job["epoch"], description=describe(job))
                if job["status"] in FINISHED:
                    return job
                time.sleep(POLL_INTERVAL_S)
    except KeyboardInterrupt:
        err.print(f"Interrupted: cancelling job {job_id} ...")
        try:
            job = api.json("DELETE", f"/jobs/{job_id}")
            err.print(f"Job {job_id} is {job['status']}.")
        except ApiError as exc:  # e.g. it finished meanwhile
            err.print(f"Could not cancel job {job_id}: {exc}")
        raise


def _job_failed(job: dict[str, Any]) -> int:
    error = job.get("error") or {}
    message = error.get("message") or "no reason given"
    code = error.get("code")
    reason = f"{code}: {message}" if code else message
    err.print(f"Job {job['job_id']} {job['status']}: {reason}", markup=False)
    return EXIT_JOB_FAILED


# -------------------------------------------------------------------------------------------- commands


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service in this process (what ``python -m service`` does)."""
    for option, variable in (("host", "HOST"), ("port", "PORT"), ("model_dir", "MODEL_DIR")):
        value = getattr(args, option)
        if value is not None:
            os.environ[variable] = str(value)
    from service.__main__ import main as serve_main  # imported here: it pulls in uvicorn and the app

    serve_main()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run training and comparison jobs from the Redis queue (``JOB_QUEUE``) until stopped."""
    from service.worker import main as worker_main  # imported here: it pulls in TensorFlow

    return worker_main()


def cmd_train(api: Api, args: argparse.Namespace) -> int:
    body = {"architecture": args.architecture, **_fit_body(args)}
    accepted = api.json("POST", f"/models/{args.name}/train", json=body)
    job_id = accepted["job_id"]
    out.print(f"Training '{args.name}' ({args.architecture}), job {job_id}", markup=False)
    job = follow_job(api, job_id, args.name)
    if job["status"] != "succeeded":
        return _job_failed(job)
    history = job.get("history") or {}
    out.print(
        f"Job {job_id} succeeded: model '{job['model']}' version {job['version']}, "
        f"val_accuracy {_fmt(_last(history, 'val_accuracy'), 3)}, loss {_fmt(_last(history, 'loss'))}",
        markup=False,
    )
    for note in job.get("notes") or []:
        out.print(note, markup=False)
    return 0


def _parse_sequences(data: Any, where: str) -> list[list[float]]:
    if isinstance(data, dict):
        data = data.get("sequences")
    if isinstance(data, list) and data and all(isinstance(v, (int, float)) for v in data):
        data = [data]  # one sequence given bare
    if not isinstance(data, list) or not data or not all(isinstance(s, list) for s in data):
        raise UsageError(f'{where}: expected a list of sequences, e.g. [[0.1, 0.2], [0.3]] or {{"sequences": [...]}}')
    return data


def cmd_predict(api: Api, args: argparse.Namespace) -> int:
    if args.sequences is not None:
        sequences = _parse_sequences(_read_json(args.sequences, "--sequences"), "--sequences")
    elif args.file is not None:
        try:
            text = Path(args.file).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
        sequences = _parse_sequences(_read_json(text, args.file), args.file)
    elif not sys.stdin.isatty():
        sequences = _parse_sequences(_read_json(sys.stdin.read(), "stdin"), "stdin")
    else:
        raise UsageError("give --sequences JSON, --file FILE.json, or pipe JSON to stdin")
    body: dict[str, Any] = {"sequences": sequences}
    if args.version is not None:
        body["version"] = args.version
    if args.truncate is not None:
        body["truncate"] = args.truncate
    result = api.json("POST", f"/models/{args.name}/predict", json=body)
    if args.json:
        print(json.dumps(result))
        return 0
    table = Table(title=f"{result['model']} v{result['version']}")
    table.add_column("index", justify="right")
    first = result["predictions"][0]
    heading = "probability" if "probability" in first else "probabilities" if "probabilities" in first else "values"
    table.add_column(heading, justify="right", no_wrap=True)
    if "label" in first:
        table.add_column("label", justify="right")
    for index, prediction in enumerate(result["predictions"]):
        table.add_row(str(index), *_prediction_cells(prediction))
    out.print(table)
    return 0


def _report(job: dict[str, Any]) -> "ComparisonReport | None":
    """A compare job's report read as its type. Imported here: the report types are plain dataclasses (no
    Keras), but every other command starts without ``models``."""
    from pydantic import TypeAdapter

    from models.training.comparison_report import ComparisonReport

    raw = job.get("report")
    return None if raw is None else TypeAdapter(ComparisonReport).validate_python(raw)


def _numbers(values: list[float]) -> str:
    return " ".join(f"{v:.6f}" for v in values)


def _prediction_cells(prediction: dict[str, Any]) -> list[str]:
    """A prediction's cells: probability and label (binary), class probabilities and label (multiclass), values."""
    if "probability" in prediction:
        return [f"{prediction['probability']:.6f}", str(prediction["label"])]
    if "probabilities" in prediction:
        return [_numbers(prediction["probabilities"]), str(prediction["label"])]
    return [_numbers(prediction["values"])]


def _step_text(result: dict[str, Any]) -> str:
    """One line after a step: the last probability (binary), else the last prediction's label and numbers."""
    if "probability" in result:
        return f"steps_seen {result['steps_seen']}  probability {result['probability']:.6f}"
    last = result["prediction"]
    if "label" in last:
        return f"steps_seen {result['steps_seen']}  label {last['label']}  probabilities {_numbers(last['probabilities'])}"
    return f"steps_seen {result['steps_seen']}  values {_numbers(last['values'])}"


def _compare_text(job: dict[str, Any]) -> str:
    report = _report(job)
    done = ""
    if report is not None:
        done = ", ".join(f"{row.architecture} {_fmt(row.metric(report.ranked_by), 3)}" for row in report.leaderboard)
    return f"{job['status']}" + (f"  done: {done}" if done else "")


def leaderboard_table(report: "ComparisonReport") -> Table:
    """The leaderboard with the task's metric columns, the recommended architecture starred."""
    table = Table(title="Leaderboard")
    table.add_column("#", justify="right")
    table.add_column("architecture", no_wrap=True)
    for column in report.columns:
        table.add_column(column, justify="right")
    table.add_column("params", justify="right")
    table.add_column("train s", justify="right")
    table.add_column("ms/seq", justify="right")
    for rank, row in enumerate(report.leaderboard, start=1):
        name = row.architecture + (" *" if row.architecture == report.recommended else "")
        table.add_row(
            str(rank),
            name,
            *(_fmt(row.metric(column), 4 if column.endswith("loss") else 3) for column in report.columns),
            _fmt(row.param_count),
            _fmt(row.train_seconds, 1),
            _fmt(row.predict_ms_per_sequence, 3),
        )
    if report.recommended:
        table.caption = "* recommended"
    return table


def cmd_compare(api: Api, args: argparse.Namespace) -> int:
    body = _fit_body(args)
    if args.architectures:
        body["architectures"] = [name.strip() for name in args.architectures.split(",") if name.strip()]
    if args.keep_best_as:
        body["keep_best_as"] = args.keep_best_as
    job_id = api.json("POST", "/compare", json=body)["job_id"]
    out.print(f"Comparing architectures, job {job_id}", markup=False)
    job = follow_job(api, job_id, "compare", _compare_text)
    if job["status"] != "succeeded":
        return _job_failed(job)
    if args.json:
        print(json.dumps(job.get("report")))
    elif (report := _report(job)) is not None:
        out.print(leaderboard_table(report))
        for names, reason in report.skipped_reasons():
            out.print(f"Skipped {', '.join(names)}: {reason}", markup=False)
        out.print()
        out.print(report.recommendation, markup=False)
        if report.kept_as:
            kept = report.kept_as
            out.print(f"Kept {kept.architecture} as model '{kept.model}' version {kept.version}.", markup=False)
    if args.plot:
        png = api.call("GET", f"/jobs/{job_id}/report.png").content
        Path(args.plot).write_bytes(png)
        err.print(f"Learning curves saved to {args.plot}", markup=False)
    return 0


_SEPARATORS = re.compile(r"[\s,]+")


def _parse_values(line: str) -> list[float | int]:
    values: list[float | int] = []
    for token in _SEPARATORS.split(line.strip()):
        if not token:
            continue
        try:
            values.append(int(token))
        except ValueError:
            try:
                values.append(float(token))
            except ValueError:
                raise UsageError(f"not a number: {token!r}") from None
    return values


def _lines(interactive: bool) -> Iterable[str]:
    while True:
        if interactive:
            out.print("> ", end="")
        line = sys.stdin.readline()
        if not line:
            return
        yield line


class _HttpSteps:
    """Steps through ``POST /sessions/{id}/step``: one request each."""

    transport = "HTTP"

    def __init__(self, api: Api, session_id: str) -> None:
        self.api = api
        self.session_id = session_id

    def step(self, values: list[Any]) -> dict[str, Any]:
        return self.api.json("POST", f"/sessions/{self.session_id}/step", json={"values": values})

    def close(self) -> None:
        pass


class _StreamSteps:
    """Steps over the session's WebSocket stream: one message each on one connection."""

    transport = "WebSocket"

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        json.loads(self.connection.recv(timeout=30))  # the first message is the session

    def step(self, values: list[Any]) -> dict[str, Any]:
        try:
            self.connection.send(json.dumps({"values": values}))
            answer = json.loads(self.connection.recv(timeout=60))
        except ConnectionClosed as exc:  # a fatal error closed the stream: 4000 + its HTTP status
            code = exc.rcvd.code if exc.rcvd else 1006
            reason = exc.rcvd.reason if exc.rcvd else "connection lost"
            raise ApiError(code - 4000 if code >= 4000 else 503, reason or "stream_closed", "The stream was closed.") from None
        if "error" in answer:
            # An error the stream goes on after (a fatal one closes it: the next step says so).
            error = answer["error"]
            raise ApiError(422, error["code"], error["message"], error.get("details"))
        return answer

    def close(self) -> None:
        self.connection.close()


def _open_steps(api: Api, session_id: str, use_http: bool) -> _HttpSteps | _StreamSteps:
    """The session's WebSocket stream when the service takes one, else HTTP steps."""
    if not use_http:
        try:
            return _StreamSteps(api.stream(f"/sessions/{session_id}/stream"))
        except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
            pass  # e.g. a proxy in front that does not pass WebSockets
    return _HttpSteps(api, session_id)


def _session_body(args: argparse.Namespace) -> dict[str, Any] | None:
    """The create body: ``ttl_s``, and where to start (``--fork``, or ``--state-file`` when it exists)."""
    body: dict[str, Any] = {"ttl_s": args.ttl} if args.ttl else {}
    if args.fork:
        body["fork_of"] = args.fork
    if args.state_file and Path(args.state_file).exists():
        if args.fork:
            raise UsageError("give --fork or an existing --state-file, not both")
        try:
            body["state"] = _read_json(Path(args.state_file).read_text(), args.state_file)
        except OSError as exc:
            raise UsageError(f"cannot read {args.state_file}: {exc.strerror}") from None
    return body or None


def cmd_session(api: Api, args: argparse.Namespace) -> int:
    # A model of several features per step takes one step (its n_features numbers) per line.
    n_features = api.json("GET", f"/models/{args.name}").get("n_features", 1)
    session = api.json("POST", f"/models/{args.name}/sessions", json=_session_body(args))
    session_id = session["session_id"]
    steps = _open_steps(api, session_id, args.http)
    interactive = sys.stdin.isatty()
    if interactive:
        what = "one or more values per line" if n_features == 1 else f"one step of {n_features} values per line"
        out.print(
            f"Session {session_id} on '{session['model']}' version {session['version']}, at step "
            f"{session['steps_seen']}, over {steps.transport}. "
            f"Type {what} (spaces or commas), 'reset' or 'quit'.",
            markup=False,
        )
    try:
        for line in _lines(interactive):
            command = line.strip().lower()
            if not command:
                continue
            if command in ("quit", "exit", "q"):
                break
            if command == "reset":
                api.json("POST", f"/sessions/{session_id}/reset")
                out.print("reset: steps_seen 0", markup=False)
                continue
            try:
                values = _parse_values(line)
                result = steps.step(values if n_features == 1 else [values])
            except UsageError as exc:
                err.print(f"error: {exc}", markup=False)
                continue
            except ApiError as exc:
                if exc.status != 422:
                    raise
                err.print(f"error: {exc}", markup=False)
                continue
            out.print(_step_text(result), markup=False)
    except KeyboardInterrupt:
        pass
    finally:
        steps.close()
        try:
            if args.state_file:
                state = api.json("GET", f"/sessions/{session_id}/state")
                Path(args.state_file).write_text(json.dumps(state))
                err.print(f"State at step {state['steps_seen']} saved to {args.state_file}", markup=False)
        finally:
            try:
                api.call("DELETE", f"/sessions/{session_id}")
            except (ApiError, httpx.TransportError):
                pass
    return 0


def cmd_models(api: Api, args: argparse.Namespace) -> int:
    rows = api.json("GET", "/models")
    if args.json:
        print(json.dumps(rows))
        return 0
    table = Table(title="Models")
    for column in ("name", "architecture", "version", "max_len", "val_accuracy", "backend"):
        table.add_column(column, no_wrap=True)
    for m in rows:
        table.add_row(
            m["name"], m["architecture"], str(m["version"]), str(m["max_len"]),
            _fmt(m.get("metrics", {}).get("val_accuracy"), 3), m.get("backend") or "-",
        )
    out.print(table if rows else "No models yet.")
    return 0


def cmd_architectures(api: Api, args: argparse.Namespace) -> int:
    rows = api.json("GET", "/architectures")
    if args.json:
        print(json.dumps(rows))
        return 0
    table = Table(title="Architectures", show_lines=True)
    table.add_column("name", no_wrap=True)
    table.add_column("input")
    table.add_column("sessions")
    table.add_column("when to use")
    for a in rows:
        table.add_row(a["name"], a["input_kind"], "yes" if a["supports_sessions"] else "no", a["when_to_use"])
    out.print(table)
    return 0


def cmd_datasets(api: Api, args: argparse.Namespace) -> int:
    rows = api.json("GET", "/datasets")
    if args.json:
        print(json.dumps(rows))
        return 0
    table = Table(title="Built-in datasets")
    table.add_column("name", no_wrap=True)
    table.add_column("input")
    table.add_column("task")
    table.add_column("features", justify="right")
    table.add_column("sequences", justify="right")
    table.add_column("max_len", justify="right")
    table.add_column("description")
    for d in rows:
        task = d["task"] + (f" ({d['n_classes']})" if d["task"] == "multiclass" else "")
        table.add_row(
            d["name"], d["input_kind"], task, str(d["n_features"]), str(d["n_sequences"]), str(d["max_len"]), d["description"]
        )
    out.print(table)
    return 0


# ---------------------------------------------------------------------------------------------- parser


def _add_fit_options(parser: argparse.ArgumentParser, epochs_default: int | None = None) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="a built-in dataset (see `lstm-serve datasets`)")
    source.add_argument("--data", metavar="FILE.json", help='{"sequences": [[...], ...], "labels": [0, 1, ...]}')
    parser.add_argument("--epochs", type=int, default=epochs_default)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--validation-split", type=float)
    parser.add_argument("--seed", type=int)
    for name in PARAM_NAMES:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, help=f"hyper-parameter {name}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get("LSTM_SERVE_URL") or DEFAULT_URL, help="service URL (env LSTM_SERVE_URL)"
    )
    common.add_argument("--api-key", default=os.environ.get("API_KEY"), help="bearer token (env API_KEY)")

    parser = argparse.ArgumentParser(prog="lstm-serve", description="Train, compare and query an lstm-serve service.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Only the client commands take --url and --api-key: `serve` is configured by HOST, PORT, API_KEY, ... itself.
    serve = commands.add_parser("serve", help="run the service in this process")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--model-dir")
    serve.set_defaults(handler=None)

    commands.add_parser("worker", help="run queued training jobs (needs JOB_QUEUE; configured like the service)")

    train = commands.add_parser("train", parents=[common], help="train a model and follow its job")
    train.add_argument("name")
    train.add_argument("--architecture", "-a", default="lstm")
    _add_fit_options(train)
    train.set_defaults(handler=cmd_train)

    predict = commands.add_parser("predict", parents=[common], help="probabilities for sequences")
    predict.add_argument("name")
    given = predict.add_mutually_exclusive_group()
    given.add_argument("--sequences", metavar="JSON", help="e.g. '[[0.1, 0.2], [0.3]]'")
    given.add_argument("--file", metavar="FILE.json", help='a list of sequences or {"sequences": [...]}')
    predict.add_argument("--version", type=int)
    predict.add_argument("--truncate", choices=["pre", "post"])
    predict.add_argument("--json", action="store_true", help="print the raw JSON answer")
    predict.set_defaults(handler=cmd_predict)

    compare = commands.add_parser("compare", parents=[common], help="which architecture fits my data?")
    _add_fit_options(compare)
    compare.add_argument("--architectures", metavar="a,b", help="comma-separated (default: all that fit the data)")
    compare.add_argument("--keep-best-as", metavar="NAME", help="store the recommended one as this model")
    compare.add_argument("--plot", metavar="OUT.png", help="save the learning curves")
    compare.add_argument("--json", action="store_true", help="print the report as JSON")
    compare.set_defaults(handler=cmd_compare)

    session = commands.add_parser("session", parents=[common], help="step values through a model's state")
    session.add_argument("name")
    session.add_argument("--ttl", type=int, help="idle seconds before the session expires")
    session.add_argument("--fork", metavar="SESSION_ID", help="start at this live session's state (it is untouched); write --fork=ID, as ids may begin with '-'")
    session.add_argument(
        "--state-file", metavar="FILE",
        help="start at the snapshot in FILE if it exists, and save the session's state there at the end",
    )
    session.add_argument("--http", action="store_true", help="step over HTTP, not the WebSocket stream")
    session.set_defaults(handler=cmd_session)

    for name, handler, text in (
        ("models", cmd_models, "list stored models"),
        ("architectures", cmd_architectures, "the five architectures and when to use each"),
        ("datasets", cmd_datasets, "the built-in datasets"),
    ):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("--json", action="store_true", help="print the raw JSON answer")
        sub.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lstm-serve`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "worker":
        return cmd_worker(args)
    api = Api(args.url, args.api_key)
    try:
        return args.handler(api, args)
    except (ApiError, UsageError) as exc:
        err.print(f"error: {exc}", markup=False)
        return EXIT_ERROR
    except httpx.TransportError as exc:
        err.print(f"error: could not reach lstm-serve at {api.url} ({type(exc).__name__}: {exc})", markup=False)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    finally:
        api.close()


if __name__ == "__main__":
    sys.exit(main())
