"""Every server of the peer benchmark: how it starts, and the request its protocol takes for the benchmark
sequence (``bench.run.SEQUENCE``: one 50-step float sequence, the same numbers for every server)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.peers.servers.onnx_model import ONNX_PATH_ENV
from bench.peers.venvs import pinned_version
from bench.run import MODEL_NAME, SEQUENCE, Server, base_env, free_port, start_lstm_serve, start_uvicorn


@dataclass(frozen=True)
class Launch:
    """What a contender needs to start: the benchmark model (lstm-serve's store and the exported ONNX
    file), a folder for logs, and the interpreter of each prepared peer environment."""

    model_dir: Path
    onnx_path: Path
    workdir: Path
    pythons: dict[str, Path]

    def python(self, venv: str | None) -> str:
        return sys.executable if venv is None else str(self.pythons[venv])


@dataclass(frozen=True)
class Contender:
    """One row of the peer table.

    ``kind`` is ``lstm-serve`` (ours), ``peer`` (does the model work: the "best peer" is chosen among these)
    or ``floor`` (fixed answer: what HTTP alone costs). ``venv`` names ``requirements/<venv>.txt`` (None:
    lstm-serve's own interpreter). ``body`` is the request that carries ``SEQUENCE`` in this server's
    protocol, posted to ``path``; ``read`` takes the probability out of the JSON answer (None for floors)."""

    label: str
    kind: Literal["lstm-serve", "peer", "floor"]
    venv: str | None
    path: str
    body: dict[str, Any]
    read: Callable[[Any], float] | None
    ready_path: str
    starter: Callable[[Contender, Launch], Server]
    setup: str

    def start(self, launch: Launch) -> Server:
        """Start this server's process (not yet ready: ``Server.wait_ready(self.ready_path)``)."""
        return self.starter(self, launch)

    @property
    def body_json(self) -> str:
        """The body as sent: compact JSON, like ``bench.run.PREDICT_BODY``."""
        return json.dumps(self.body, separators=(",", ":"))


# --------------------------------------------------------------------------------------------------
# How each kind of server starts


def _lstm_serve(log_level: str | None) -> Callable[[Contender, Launch], Server]:
    def start(contender: Contender, launch: Launch) -> Server:
        return start_lstm_serve(contender.label, launch.model_dir, launch.workdir, log_level=log_level)

    return start


def _uvicorn(app: str) -> Callable[[Contender, Launch], Server]:
    def start(contender: Contender, launch: Launch) -> Server:
        return start_uvicorn(
            contender.label, app, launch.workdir, python=launch.python(contender.venv),
            **{ONNX_PATH_ENV: str(launch.onnx_path)},
        )

    return start


def _command(*args: str) -> Callable[[Contender, Launch], Server]:
    """``python <args>`` in the contender's environment; ``{port}`` in ``args`` becomes a free port."""

    def start(contender: Contender, launch: Launch) -> Server:
        port = str(free_port())
        argv = [launch.python(contender.venv), *(a.replace("{port}", port) for a in args)]
        env = base_env(PORT=port, **{ONNX_PATH_ENV: str(launch.onnx_path)})
        return Server(contender.label, argv, env, launch.workdir)

    return start


# --------------------------------------------------------------------------------------------------
# The protocols' answers


def _lstm_serve_answer(payload: Any) -> float:
    return payload["predictions"][0]["probability"]


def _kserve_v1_answer(payload: Any) -> float:
    return payload["predictions"][0]


def _bentoml_answer(payload: Any) -> float:
    return payload[0]


def _litserve_answer(payload: Any) -> float:
    return payload["probability"]


# --------------------------------------------------------------------------------------------------

_PREDICT = f"/models/{MODEL_NAME}/predict"
_OURS = {"sequences": [SEQUENCE]}


def contenders() -> list[Contender]:
    """Every server, in the order of the report's table (floors, ours, then the peers)."""
    kserve, bentoml, litserve = (pinned_version(name, name) for name in ("kserve", "bentoml", "litserve"))
    fastapi = pinned_version("handwritten", "fastapi")
    return [
        Contender(
            "raw ASGI on uvicorn, fixed JSON (HTTP floor)", "floor", "handwritten", _PREDICT, _OURS, None,
            "/health/ready", _uvicorn("bench.peers.servers.floors:asgi_app"),
            "`bench/peers/servers/floors.py:asgi_app`: reads the body, answers a constant",
        ),
        Contender(
            "FastAPI, body read, fixed JSON", "floor", "handwritten", _PREDICT, _OURS, None,
            "/health/ready", _uvicorn("bench.peers.servers.floors:fastapi_app"),
            f"`floors.py:fastapi_app` (FastAPI {fastapi}): a route awaits the body, answers a constant",
        ),
        Contender(
            "lstm-serve (`LOG_LEVEL=warning`)", "lstm-serve", None, _PREDICT, _OURS, _lstm_serve_answer,
            "/health/ready", _lstm_serve("warning"),
            "`python -m service`, access log off (as `bench/run.py` runs it)",
        ),
        Contender(
            "lstm-serve at its defaults", "lstm-serve", None, _PREDICT, _OURS, _lstm_serve_answer,
            "/health/ready", _lstm_serve(None),
            "`python -m service` with no settings changed: what a user gets (access log as shipped)",
        ),
        Contender(
            "hand-written FastAPI + onnxruntime, no batching", "peer", "handwritten", _PREDICT, _OURS,
            _lstm_serve_answer, "/health/ready", _uvicorn("bench.peers.servers.fastapi_onnx:app"),
            f"`fastapi_onnx.py` (FastAPI {fastapi}): pydantic body, session run inline on the event loop",
        ),
        Contender(
            f"KServe {kserve} ModelServer + onnxruntime (V1)", "peer", "kserve",
            f"/v1/models/{MODEL_NAME}:predict", {"instances": [SEQUENCE]}, _kserve_v1_answer,
            f"/v1/models/{MODEL_NAME}",
            _command(
                "-m", "bench.peers.servers.kserve_model", "--http_port", "{port}", "--enable_grpc", "false",
                "--enable_latency_logging", "false",
            ),
            "`kserve_model.py`: a `kserve.Model`, V1 protocol, no batcher (KServe has none in-process), gRPC off",
        ),
        Contender(
            f"LitServe {litserve} + onnxruntime, batching", "peer", "litserve", "/predict",
            {"sequence": SEQUENCE}, _litserve_answer, "/health", _command("-m", "bench.peers.servers.litserve_api"),
            "`litserve_api.py`: `LitAPI(max_batch_size=32, batch_timeout=0.001)`, 1 API server + 1 worker process",
        ),
        Contender(
            f"BentoML {bentoml} + onnxruntime, batching", "peer", "bentoml", "/predict", _OURS, _bentoml_answer,
            "/readyz",
            _command(
                "-m", "bentoml", "serve", "bench.peers.servers.bentoml_service:BenchService",
                "--host", "127.0.0.1", "--port", "{port}",
            ),
            "`bentoml_service.py`: `@bentoml.api(batchable=True, max_batch_size=32)`, 1 worker under BentoML's "
            "supervisor",
        ),
    ]
