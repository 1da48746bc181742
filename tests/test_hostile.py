"""Hostile input, in process: the one number rule and its pydantic twin agree; size caps are checked before
allocation on predict; ``API_KEY_ALL`` guards every route but the probes. The same attacks against a real
process are in tests/e2e/test_attacks.py."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from models.errors import InvalidInput
from models.inputs import FLOAT32_MAX, check_number
from service.schemas import FiniteNumber
from tests.test_validation import assert_error

NUMBERS = [
    0, 1, -1, 0.5, 1e-45, 3.4e38, -3.4e38, FLOAT32_MAX, -FLOAT32_MAX, 10**38, 2**127,
    3.5e38, -3.5e38, 1e39, 10**39, -(10**39), 10**400, -(10**400), float("inf"), float("-inf"), float("nan"),
    True, False, None, "1", [1], {"x": 1},
]


@pytest.mark.parametrize("value", NUMBERS, ids=[repr(v)[:20] for v in NUMBERS])
def test_the_native_schema_and_the_domain_rule_accept_the_same_numbers(value: object) -> None:
    try:
        check_number(value, "x")
        domain = True
    except InvalidInput as exc:
        domain = False
        assert exc.details["field"] == "x"
        assert "x: expected" in exc.message and len(exc.message) < 200  # 400 digits are never echoed
    try:
        TypeAdapter(FiniteNumber).validate_python(value)
        schema = True
    except ValidationError:
        schema = False
    assert domain == schema, value


def test_predict_checks_the_padded_size_before_padding(app_client: Callable[..., TestClient], trained_dir: Path) -> None:
    client = app_client(trained_dir, max_padded_values=300)  # m-lstm pads to 30 steps: 10 sequences fit
    ok = client.post("/models/m-lstm/predict", json={"sequences": [[0.1]] * 10})
    assert ok.status_code == 200, ok.text
    error = assert_error(client.post("/models/m-lstm/predict", json={"sequences": [[0.1]] * 11}), 422, "invalid_input", "sequences")
    assert error["details"]["got"] == 330
    assert "MAX_PADDED_VALUES" in error["message"]
    tf_serving = client.post("/v1/models/m-lstm:predict", json={"instances": [[0.1]] * 11})
    assert tf_serving.status_code == 400 and "MAX_PADDED_VALUES" in tf_serving.json()["error"]


def test_sequence_length_cap_is_a_setting(app_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = app_client(max_sequence_length=5)
    body = {"architecture": "lstm", "data": {"sequences": [[0.1] * 6, [0.2]], "labels": [0, 1]}, "epochs": 1}
    error = assert_error(client.post("/models/m/train", json=body), 422, "invalid_input", "data.sequences[0]")
    assert error["details"]["got"] == 6 and "MAX_SEQUENCE_LENGTH" in error["message"]
    body = {"architecture": "lstm", "dataset": "noisy_trend", "params": {"max_len": 6}}
    assert_error(client.post("/models/m/train", json=body), 422, "invalid_input", "params.max_len")
    assert client.get("/jobs").json() == []


def every_route(client: TestClient) -> list[tuple[str, str]]:
    """``(method, path)`` of every route; FastAPI keeps an included router as one entry holding its routes."""
    found = []
    for route in client.app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        found += [(method, context.path) for context in contexts for method in sorted(context.methods)]
    return found


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    for param, value in {"name": "m-lstm", "job_id": "0123456789abcdef", "session_id": "nope", "version": "1"}.items():
        path = path.replace("{" + param + "}", value)
    return client.request(method, path, headers=headers).status_code


def test_api_key_all_guards_every_route_but_the_probes(
    app_client: Callable[..., TestClient], trained_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"  # a copy: the authorized DELETE /models/m-lstm really deletes
    shutil.copytree(trained_dir, model_dir, ignore=shutil.ignore_patterns(".jobs"))
    client = app_client(model_dir, api_key="k", api_key_all=True)
    routes = every_route(client)
    assert len(routes) > 30
    for method, path in routes:
        if path.startswith(("/health/", "/v2/health/")):
            assert _call(client, method, path, {}) == 200, path
            continue
        assert _call(client, method, path, {}) == 401, (method, path)
        assert _call(client, method, path, {"Authorization": "Bearer k"}) not in (401, 500), (method, path)
    assert {("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/")} <= set(routes)
