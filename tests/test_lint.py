"""Static checks run with the tests: ruff (unused imports, undefined names, syntax errors; rules in pyproject)
and the direction of imports between layers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, by absolute name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


#: (files, module prefixes they must not import): arrows point inward only.
LAYERS = [
    ("models", ("service", "fastapi", "starlette", "uvicorn", "bench", "tests")),
    ("models/serving", ("models.training",)),
]


@pytest.mark.parametrize(("folder", "forbidden"), LAYERS, ids=[folder for folder, _ in LAYERS])
def test_imports_point_inward(folder: str, forbidden: tuple[str, ...]) -> None:
    offenders = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / folder).rglob("*.py")
        for module in imported_modules(path)
        if any(module == prefix or module.startswith(f"{prefix}.") for prefix in forbidden)
    }
    assert not offenders, sorted(offenders)
