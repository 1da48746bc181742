"""A 5-second run of bench/load_mixed.py: mixed predict, session-step and training traffic, zero errors."""

import pytest

from bench.load_mixed import run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_mixed_load_for_five_seconds_has_no_errors() -> None:
    result = run(seconds=5, predictors=3, steppers=2, train_every_s=1.5)
    for kind, row in result["kinds"].items():
        assert row["errors"] == 0, (kind, row["first_errors"])
    assert result["kinds"]["predict"]["requests"] > 10
    assert result["kinds"]["session"]["requests"] > 10
    assert result["kinds"]["train"]["requests"] >= 1
    assert len(result["versions"]) >= 2
    assert result["server_alive"]
