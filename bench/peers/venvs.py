"""One virtual environment per peer, made on first use from its frozen requirements file.

``requirements/<name>.txt`` lists every package of the environment with its exact version (a ``pip freeze``
of the top-level pins its first line names). The environment lives in ``<cache>/<name>-<hash>``, where the
hash is the file's: editing the file makes a new environment, and an unchanged file reuses the old one at
once. ``pip install --no-deps`` installs exactly the listed set (nothing resolved anew on a later day) and
``pip check`` then proves the set is consistent. A ``.complete`` marker is written last, so an interrupted
install is removed and redone on the next run instead of being used half made.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "requirements"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lstm-serve-bench"
_MARKER = ".complete"


def requirements_file(name: str) -> Path:
    """The frozen requirements of environment ``name``."""
    return REQUIREMENTS / f"{name}.txt"


def pinned_version(name: str, package: str) -> str:
    """The version ``requirements/<name>.txt`` pins for ``package`` (for the report's labels)."""
    wanted = package.lower().replace("_", "-")
    for line in requirements_file(name).read_text().splitlines():
        pin, sep, version = line.partition("==")
        if sep and pin.strip().lower().replace("_", "-") == wanted:
            return version.strip()
    raise KeyError(f"{package} is not pinned in {requirements_file(name)}")


def venv_dir(name: str, cache: Path = DEFAULT_CACHE) -> Path:
    """Where the environment for the current content of ``requirements/<name>.txt`` lives."""
    digest = hashlib.sha256(requirements_file(name).read_bytes()).hexdigest()[:12]
    return cache / f"{name}-{digest}"


def ensure_venv(name: str, cache: Path = DEFAULT_CACHE) -> Path:
    """The Python interpreter of environment ``name``, creating the environment first if needed (minutes)."""
    target = venv_dir(name, cache)
    python = target / "bin" / "python"
    if (target / _MARKER).exists():
        return python
    if target.exists():
        shutil.rmtree(target)  # left by an interrupted install
    print(f"Creating the {name} environment in {target} (first use; a few minutes) ...", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(target)])
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "install", "--no-deps", "-r", str(requirements_file(name))])
    _run([*pip, "check"])
    (target / _MARKER).write_text(requirements_file(name).read_text())
    return python


def _run(argv: list[str]) -> None:
    """Run a set-up step quietly; its whole output goes into the error when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
