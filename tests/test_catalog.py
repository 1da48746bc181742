"""GET /architectures and GET /datasets: the read-only catalogue."""

from fastapi.testclient import TestClient

EXPECTED = {
    # name: (input_kind, stateful, supports_sessions, default param names)
    "lstm": ("float", False, True, {"units"}),
    "stateful_lstm": ("float", True, True, {"units"}),
    "td_dense_lstm": ("float", False, True, {"units", "dense_units"}),
    "embedding_lstm": ("tokens", False, True, {"units", "vocab_size", "embedding_dim"}),
    "embedding_bilstm": ("tokens", False, False, {"units", "vocab_size", "embedding_dim"}),
}


def test_architectures_lists_exactly_the_five(client: TestClient) -> None:
    response = client.get("/architectures")
    assert response.status_code == 200
    body = response.json()
    assert sorted(a["name"] for a in body) == sorted(EXPECTED)
    assert len(body) == 5


def test_architecture_flags_and_defaults(client: TestClient) -> None:
    by_name = {a["name"]: a for a in client.get("/architectures").json()}
    for name, (input_kind, stateful, sessions, param_names) in EXPECTED.items():
        arch = by_name[name]
        assert arch["input_kind"] == input_kind, name
        assert arch["stateful"] is stateful, name
        assert arch["supports_sessions"] is sessions, name
        assert set(arch["default_params"]) == param_names, name
        assert arch["default_params"]["units"] == 10, name
        if "embedding_dim" in param_names:
            assert arch["default_params"]["embedding_dim"] == 128, name
            assert arch["default_params"]["vocab_size"] == 100, name
        if "dense_units" in param_names:
            assert arch["default_params"]["dense_units"] == 50, name
        assert isinstance(arch["summary"], str) and arch["summary"]
        assert isinstance(arch["when_to_use"], str) and arch["when_to_use"]


def test_bilstm_is_the_only_one_without_sessions(client: TestClient) -> None:
    no_sessions = [a["name"] for a in client.get("/architectures").json() if not a["supports_sessions"]]
    assert no_sessions == ["embedding_bilstm"]


def test_datasets_lists_the_builtins(client: TestClient) -> None:
    response = client.get("/datasets")
    assert response.status_code == 200
    by_name = {d["name"]: d for d in response.json()}
    assert set(by_name) == {"noisy_trend", "long_memory", "token_pattern", "token_cue_start", "movements", "next_value"}
    assert by_name["noisy_trend"]["input_kind"] == "float"
    assert by_name["noisy_trend"]["vocab_size"] is None
    assert by_name["long_memory"]["input_kind"] == "float"
    assert by_name["long_memory"]["max_len"] == 40
    for name in ("token_pattern", "token_cue_start"):
        assert by_name[name]["input_kind"] == "tokens"
        assert by_name[name]["vocab_size"] == 50
    for d in by_name.values():
        assert d["n_sequences"] > 0 and d["max_len"] > 0
        assert d["description"]


def test_datasets_describe_task_features_and_classes(client: TestClient) -> None:
    by_name = {d["name"]: d for d in client.get("/datasets").json()}
    for name in ("noisy_trend", "long_memory", "token_pattern", "token_cue_start"):
        assert (by_name[name]["task"], by_name[name]["n_features"], by_name[name]["n_classes"]) == ("binary", 1, 2)
    movements = by_name["movements"]
    assert (movements["task"], movements["input_kind"], movements["n_features"], movements["n_classes"]) == (
        "multiclass", "float", 3, 4
    )
    assert movements["max_len"] == 40 and "(40, 3)" in movements["description"]
    next_value = by_name["next_value"]
    assert (next_value["task"], next_value["input_kind"], next_value["n_features"], next_value["n_classes"]) == (
        "regression", "float", 1, None
    )
    assert next_value["max_len"] == 30 and "(30, 1)" in next_value["description"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["DatasetPublic"]["properties"]
    assert {"task", "n_features", "n_classes"} <= set(schema)
