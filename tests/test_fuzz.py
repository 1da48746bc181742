"""Property-based fuzzing of the whole OpenAPI schema with schemathesis, against a real server process.

The schema is the app's own (``app.openapi()``, static, read without starting anything); every operation
becomes one pytest item whose cases are sent over HTTP to one ``python -m service`` process. The server
runs with ``MAX_EPOCHS=2`` and ``MAX_QUEUED_JOBS=2`` on a model folder holding one tiny trained model,
``tiny``: half of the cases of a route with ``{name}`` are pointed at it (and half of the session routes
at a live session), so the model, predict and session code paths see real objects, not only 404s.

Checks: no 5xx (``not_a_server_error``), every response matches the schema declared for its status
(``response_schema_conformance``), every status is declared (``status_code_conformance``) and the
content type is the declared one (``content_type_conformance``). Generation is derandomized and bounded.
"""

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import app
from tests.process import ServiceProcess, service_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = "tiny"
#: Caps on what a fuzzed training or comparison may ask for, so no case starts long work. Epochs are
#: capped by the server itself (MAX_EPOCHS=2): larger ones must be refused with 422, and are sent as is.
PARAM_CAPS = {"max_len": 40, "units": 4, "vocab_size": 50, "embedding_dim": 4, "dense_units": 4}
MAX_TRAIN_SEQUENCES = 40
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]

schema = schemathesis.openapi.from_dict(app.openapi())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    workdir = root / "cwd"
    workdir.mkdir()
    env = service_env(root / "models", DEMO_MODEL="false", MAX_EPOCHS="2", MAX_QUEUED_JOBS="2", LOG_LEVEL="warning")
    service = ServiceProcess(workdir, env, "fuzz")
    try:
        service.wait_ready()
        service.train(TINY, architecture="lstm", dataset="noisy_trend", epochs=1, params={"units": 4})
        yield service
    finally:
        service.kill()


_counter = itertools.count()


def _bound_fit_request(body: Any) -> None:
    """Clamp a training/comparison body's sizes in place (the server caps epochs itself)."""
    if not isinstance(body, dict):
        return
    params = body.get("params")
    if isinstance(params, dict):
        for key, cap in PARAM_CAPS.items():
            value = params.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                params[key] = cap
    data = body.get("data")
    if isinstance(data, dict):
        for key in ("sequences", "labels"):
            if isinstance(data.get(key), list):
                data[key] = data[key][:MAX_TRAIN_SEQUENCES]
        if isinstance(data.get("sequences"), list):
            data["sequences"] = [s[: PARAM_CAPS["max_len"]] if isinstance(s, list) else s for s in data["sequences"]]
    if isinstance(body.get("batch_size"), int) and not isinstance(body.get("batch_size"), bool):
        body["batch_size"] = min(body["batch_size"], 64)


def _aim_at_real_objects(case: Any, server: ServiceProcess) -> None:
    """Every other case uses the real model (and a fresh live session) instead of a random name."""
    if next(_counter) % 2:
        return
    path_parameters = case.path_parameters or {}
    if "name" in path_parameters:
        path_parameters["name"] = TINY
    if "session_id" in path_parameters:
        created = server.http.post(f"/models/{TINY}/sessions")
        if created.status_code == 201:
            path_parameters["session_id"] = created.json()["session_id"]


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_fails_and_follows_its_schema(case: Any, server: ServiceProcess) -> None:
    if case.path in ("/models/{name}/train", "/compare"):
        _bound_fit_request(case.body)
    if case.method.upper() == "DELETE" and case.path == "/models/{name}":
        # Deleting the shared model would turn every later case into a 404: delete other names only.
        if case.path_parameters.get("name") == TINY:
            case.path_parameters["name"] = "not-" + TINY
    else:
        _aim_at_real_objects(case, server)
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)


def test_the_tiny_model_survived_the_fuzzing(server: ServiceProcess, tmp_path: Path) -> None:
    """After the whole run the server still answers, and the real model still predicts."""
    assert server.http.get("/health/ready").status_code == 200
    assert server.http.post(f"/models/{TINY}/predict", json={"sequences": [[0.1]], "version": 1}).status_code == 200
