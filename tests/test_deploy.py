"""Deployment files: the Dockerfile lints clean and, with docker-compose.yml, configures the service exactly
through the settings ``python -m service`` reads. (No Docker engine runs here; tests/e2e runs the same
command as real processes.)"""

import importlib.util
import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
API_REPLICAS = ("api-1", "api-2")

#: ENV names in the Dockerfile that are for Python/pip, not settings of the service.
NON_SETTING_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK"}


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, comments dropped and ``\\`` continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def dockerfile_args(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile_instructions() if kw == keyword]


def dockerfile_env() -> dict[str, str]:
    """Every ``ENV KEY=value`` pair of the Dockerfile."""
    env: dict[str, str] = {}
    for args in dockerfile_args("ENV"):
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            assert sep, f"use the ENV KEY=value form: {args!r}"
            env[key] = value
    return env


def dockerfile_cmd() -> list[str]:
    """The exec-form CMD (the last one wins, as in Docker)."""
    cmds = dockerfile_args("CMD")
    assert cmds, "Dockerfile has no CMD"
    return json.loads(cmds[-1])


def dockerfile_healthcheck() -> list[str]:
    """The exec-form command of the HEALTHCHECK, without its ``CMD`` keyword."""
    (args,) = dockerfile_args("HEALTHCHECK")
    _, sep, command = args.partition(" CMD ")
    assert sep, f"HEALTHCHECK needs a CMD: {args!r}"
    return json.loads(command)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_env(service: str) -> dict[str, str]:
    env = compose()["services"][service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``Settings`` exactly as ``python -m service`` would read them from this environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT / "tests")  # no .env file here
    return Settings()


# --- Dockerfile ---------------------------------------------------------------------------------


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"hadolint not installed next to {sys.executable} (pip install -e '.[test]')"
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")  # no repository/user config may silence a rule
    result = subprocess.run(
        [str(hadolint), "--no-color", "--format", "json", "--failure-threshold", "style",
         "--disable-ignore-pragma", "--config", str(config), str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == [], result.stdout


def test_base_image_is_pinned_python_slim() -> None:
    (base,) = dockerfile_args("FROM")
    assert base == "python:3.11-slim"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires


def test_runs_as_non_root_user() -> None:
    instructions = dockerfile_instructions()
    users = [(i, args) for i, (kw, args) in enumerate(instructions) if kw == "USER"]
    assert users, "no USER: the service would run as root"
    index, user = users[-1]
    uid = user.split(":")[0]
    assert uid not in ("root", "0")
    cmd_index = max(i for i, (kw, _) in enumerate(instructions) if kw == "CMD")
    assert index < cmd_index
    # The model folder is created and handed to that user before the switch (a fresh named volume
    # copies the image folder's ownership).
    runs = " ".join(args for kw, args in instructions[:index] if kw == "RUN")
    assert "/data/models" in runs and "chown" in runs


def test_installs_the_project_from_pyproject() -> None:
    copied = {source.rstrip("/") for args in dockerfile_args("COPY") for source in args.split()[:-1]}
    assert {"pyproject.toml", "constraints.txt", "README.md"} <= copied
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        package = pattern.rstrip("*")
        assert (ROOT / package).is_dir()
        assert package in copied, f"{package}/ is not copied into the image"
    assert any("pip install --no-cache-dir -c constraints.txt ." == args.strip() for args in dockerfile_args("RUN"))


def test_cmd_is_python_dash_m_service() -> None:
    assert dockerfile_cmd() == ["python", "-m", "service"]
    assert importlib.util.find_spec("service.__main__") is not None


def test_env_names_are_settings_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dockerfile_env()
    assert {"MODEL_DIR": "/data/models", "HOST": "0.0.0.0", "PORT": "8000"}.items() <= env.items()
    fields = {name.upper() for name in Settings.model_fields}
    unknown = set(env) - NON_SETTING_ENV - fields
    assert not unknown, f"ENV names the service never reads: {unknown}"
    settings = settings_from_env({k: v for k, v in env.items() if k in fields}, monkeypatch)
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.model_dir == Path("/data/models")


def test_port_volume_and_healthcheck_agree_with_env() -> None:
    env = dockerfile_env()
    assert dockerfile_args("EXPOSE") == [env["PORT"]]
    (volume,) = dockerfile_args("VOLUME")
    volumes = json.loads(volume) if volume.startswith("[") else volume.split()
    assert any(env["MODEL_DIR"] == v or env["MODEL_DIR"].startswith(v.rstrip("/") + "/") for v in volumes)
    check = dockerfile_healthcheck()
    assert check[0] == "python" and "curl" not in " ".join(check)
    assert "/health/ready" in check[-1]


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "var", ".git", ".pytest_cache"} <= entries
    assert not {"service", "models", "pyproject.toml"} & entries


# --- docker-compose.yml -------------------------------------------------------------------------


def test_compose_has_redis_and_two_api_replicas() -> None:
    services = compose()["services"]
    assert services["redis"]["image"] == "redis:7-alpine"
    for name in API_REPLICAS:
        service = services[name]
        build = service["build"]
        context, dockerfile = (build, "Dockerfile") if isinstance(build, str) else (build["context"], build.get("dockerfile", "Dockerfile"))
        assert (COMPOSE.parent / context / dockerfile).resolve() == DOCKERFILE
        assert "command" not in service and "entrypoint" not in service, "replicas must run the image's CMD"
        depends = service["depends_on"]
        assert "redis" in depends
        assert service["healthcheck"]["test"] == ["CMD", *dockerfile_healthcheck()]


def test_replicas_share_the_redis_session_store(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = {name: compose_env(name)["SESSION_STORE"] for name in API_REPLICAS}
    assert len(set(urls.values())) == 1, urls
    url = urlparse(urls["api-1"])
    assert url.scheme == "redis"
    assert url.hostname in compose()["services"], "SESSION_STORE must name the compose redis service"
    assert (url.port or 6379) == 6379
    for name in API_REPLICAS:
        settings = settings_from_env({**dockerfile_env(), **compose_env(name)}, monkeypatch)
        assert settings.session_store == urls["api-1"]


def test_replicas_share_the_model_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    mounts = {}
    for name in API_REPLICAS:
        env = {**dockerfile_env(), **compose_env(name)}
        settings = settings_from_env(env, monkeypatch)
        volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in doc["services"][name]["volumes"]]
        sources = {v.split(":")[0] for v in volumes if v.split(":")[1] == str(settings.model_dir)}
        assert len(sources) == 1, f"{name}: no single volume at MODEL_DIR={settings.model_dir}: {volumes}"
        mounts[name] = sources.pop()
    assert len(set(mounts.values())) == 1, mounts
    volume = mounts["api-1"]
    assert not volume.startswith((".", "/")), "a named volume, not a bind mount"
    assert volume in doc["volumes"]


def test_replicas_publish_8001_and_8002(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    published = {}
    for name in API_REPLICAS:
        settings = settings_from_env({**dockerfile_env(), **compose_env(name)}, monkeypatch)
        (mapping,) = services[name]["ports"]
        host, container = str(mapping).split(":")
        assert int(container) == settings.port
        assert settings.host == "0.0.0.0"
        published[name] = int(host)
    assert published == {"api-1": 8001, "api-2": 8002}


def test_compose_env_names_are_settings() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for name in API_REPLICAS:
        unknown = set(compose_env(name)) - fields
        assert not unknown, f"{name}: env names the service never reads: {unknown}"
