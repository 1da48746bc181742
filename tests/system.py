"""System programs some tests need (scripts/test.sh installs them from Debian's packages)."""

import os

import pytest


def required_program(path: str | None, name: str) -> str:
    """``path`` of a system program that scripts/test.sh installs: without it the test fails in CI (``CI`` set)
    and is skipped elsewhere, saying which."""
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (scripts/test.sh installs it)")
        pytest.skip(f"{name} not installed (scripts/test.sh installs it; required when CI is set)")
    return path
