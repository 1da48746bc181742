"""scripts/setup.sh picks a supported Python (3.11 or 3.12) or fails at once saying what to install, and
rebuilds a .venv made with another Python instead of reusing it; scripts/test.sh says what it installs.

Each test copies setup.sh into a scratch project and runs it with a PATH holding only fake ``python``
shims (and the few tools the script uses), so the machine's own Pythons cannot answer.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup.sh"
TEST = ROOT / "scripts" / "test.sh"
#: What setup.sh runs besides Python and bash builtins.
TOOLS = ("dirname", "rm", "touch")
#: A real Python 3.11 (the one this venv was made from).
REAL_PYTHON = Path(sys._base_executable)  # type: ignore[attr-defined]


def fake_python(bin_dir: Path, name: str, version: str | None) -> None:
    """A shim that claims ``version`` to any question; ``None``: a pyenv-style shim without that version."""
    body = f'echo "{version}"' if version else f'echo "pyenv: {name}: command not found" >&2; exit 127'
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def scratch_project(tmp_path: Path) -> tuple[Path, Path]:
    """A project folder holding setup.sh and a dependency-free package; a bin folder for PATH."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, project / "scripts" / "setup.sh")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "scratch"\nversion = "0"\n\n[tool.setuptools]\npy-modules = []\n'
    )
    (project / "constraints.txt").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return project, bin_dir


def run_setup(project: Path, bin_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHON", "VIRTUAL_ENV")}
    env["PATH"] = str(bin_dir)
    return subprocess.run(
        [shutil.which("bash"), str(project / "scripts" / "setup.sh")],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_fails_at_once_naming_what_to_install_when_no_supported_python(tmp_path: Path) -> None:
    project, bin_dir = scratch_project(tmp_path)
    fake_python(bin_dir, "python3", "3.9")
    fake_python(bin_dir, "python3.12", None)  # a pyenv shim whose version is not installed
    started = time.monotonic()
    result = run_setup(project, bin_dir, timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 10
    assert "needs Python 3.11 or 3.12" in result.stderr
    assert "python3.12 (does not run)" in result.stderr and "python3 (3.9)" in result.stderr
    assert "apt-get install python3.11" in result.stderr
    assert not (project / ".venv").exists()


def test_no_python_at_all_says_so(tmp_path: Path) -> None:
    project, bin_dir = scratch_project(tmp_path)
    result = run_setup(project, bin_dir, timeout=30)
    assert result.returncode == 1
    assert "found no python3 at all" in result.stderr


@pytest.mark.slow
def test_rebuilds_a_venv_made_with_another_python(tmp_path: Path) -> None:
    """A .venv from Python 3.9 (here a fake one) is replaced by one of the supported Python found on PATH,
    which the unsupported ``python3`` earlier in the candidate list does not shadow."""
    project, bin_dir = scratch_project(tmp_path)
    fake_python(bin_dir, "python3", "3.9")
    (bin_dir / "python3.11").symlink_to(REAL_PYTHON)
    old_bin = project / ".venv" / "bin"
    old_bin.mkdir(parents=True)
    fake_python(old_bin, "python", "3.9")
    (project / ".venv" / ".installed-base").touch()  # the old install looked complete

    result = run_setup(project, bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ".venv was made with Python 3.9; rebuilding it with python3.11 (3.11)" in result.stderr
    rebuilt = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    )
    assert rebuilt.stdout.strip() == "(3, 11)"
    assert (project / ".venv" / ".installed-base").exists()

    # A second run reuses the good .venv as it is.
    before = (project / ".venv" / "bin" / "python").stat().st_mtime_ns
    again = run_setup(project, bin_dir)
    assert again.returncode == 0 and "rebuilding" not in again.stderr
    assert (project / ".venv" / "bin" / "python").stat().st_mtime_ns == before


def test_a_venv_whose_python_is_gone_is_rebuilt_too(tmp_path: Path) -> None:
    """The check that decides, run alone: a dangling .venv/bin/python counts as another Python."""
    project, bin_dir = scratch_project(tmp_path)
    fake_python(bin_dir, "python3.12", "3.12")
    old_bin = project / ".venv" / "bin"
    old_bin.mkdir(parents=True)
    (old_bin / "python").symlink_to(tmp_path / "uninstalled-python")
    result = run_setup(project, bin_dir, timeout=30)
    # The fake 3.12 cannot make a venv, so the run fails after the decision; the decision is what counts.
    assert "a Python that no longer runs; rebuilding it with python3.12 (3.12)" in result.stderr
    assert not (old_bin / "python").is_symlink()


def test_test_script_announces_every_system_package_it_installs() -> None:
    """Each apt-get install in test.sh goes through one helper that first says what it installs and why,
    and that returns at once when the command is already there."""
    text = TEST.read_text()
    helper = text[text.index("install_system_package() {"):text.index("\n}\n")]
    assert 'command -v "$1" >/dev/null 2>&1 && return 0' in helper
    assert helper.index("echo") < helper.index("apt-get install")
    assert text.count("apt-get install") == 1, "install only through install_system_package"
    for package in ("redis-server", "chromium", "haproxy"):
        assert f"install_system_package {package} {package}" in text
