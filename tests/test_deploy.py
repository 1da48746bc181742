"""Deployment files: the Dockerfile lints clean, installs dependencies in a layer of their own and leaves no
build residue; docker-compose.yml puts one front door (HAProxy) before the API replicas, runs a training
worker and Redis with AOF, and configures every container exactly through the settings the service reads.
(No Docker engine runs here; tests/e2e runs the same commands as real processes.)"""

import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from service.config import Settings
from tests.system import required_program

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
HAPROXY = ROOT / "deploy" / "compose" / "haproxy.cfg"
#: The compose services running the lstm-serve image, and the command each runs (None: the image's CMD).
LSTM_SERVE_SERVICES = {"api": None, "worker": ["lstm-serve", "worker"]}
#: The command of a training worker, in compose and Kubernetes alike (a real subcommand of the CLI).
WORKER_COMMAND = ["lstm-serve", "worker"]

#: ENV names in the Dockerfile that are for Python/pip, not settings of the service.
NON_SETTING_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_NO_CACHE_DIR", "PATH"}


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


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, each list starting with its ``FROM``."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        assert stages, "instructions before the first FROM"
        stages[-1].append((keyword, args))
    return stages


def final_stage() -> list[tuple[str, str]]:
    """The stage that becomes the image."""
    return dockerfile_stages()[-1]


def dockerfile_args(keyword: str, instructions: list[tuple[str, str]] | None = None) -> list[str]:
    """Arguments of every ``keyword`` instruction (of the final stage for ENV, CMD, USER, HEALTHCHECK...)."""
    return [args for kw, args in (instructions if instructions is not None else final_stage()) if kw == keyword]


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



def app_get_paths() -> set[str]:
    """Every GET path the app routes (probes and health checks must name one of these)."""
    from service.app import create_app

    return {path for path, operations in create_app().openapi()["paths"].items() if "get" in operations}


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


def test_both_stages_are_the_supported_python_slim() -> None:
    stages = dockerfile_stages()
    assert len(stages) == 2, "a build stage and the final stage"
    assert stages[0][0][1] == "python:3.11-slim AS build"
    assert stages[1][0][1] == "python:3.11-slim"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    """A code change must not invalidate the dependency layer: only pyproject.toml and constraints.txt are
    copied before the dependencies are installed, and the code after."""
    build = dockerfile_stages()[0]
    copies = [(i, args.split()[:-1]) for i, (kw, args) in enumerate(build) if kw == "COPY"]
    first_index, first_sources = copies[0]
    assert sorted(first_sources) == ["constraints.txt", "pyproject.toml"]
    install = next(i for i, (kw, args) in enumerate(build) if kw == "RUN" and "-r requirements.txt" in args)
    assert first_index < install < copies[1][0]
    assert "-c constraints.txt" in build[install][1] and "--no-cache-dir" in build[install][1]
    later = {source.rstrip("/") for _, sources in copies[1:] for source in sources}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        package = pattern.rstrip("*")
        assert (ROOT / package).is_dir()
        assert package in later, f"{package}/ is not copied into the build stage"
    assert any("--no-deps" in args and "wheel" in args for kw, args in build if kw == "RUN")


def test_requirements_line_lists_exactly_the_runtime_dependencies() -> None:
    """The dependency layer installs what pyproject.toml lists (run the Dockerfile's own one-liner here)."""
    build = dockerfile_stages()[0]
    run = next(args for kw, args in build if kw == "RUN" and "requirements.txt" in args)
    command = shlex.split(run.split(">")[0])
    assert command[:2] == ["python", "-c"]
    listed = subprocess.run([sys.executable, "-c", command[2]], cwd=ROOT, capture_output=True, text=True, check=True)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed.stdout.split() == dependencies
    assert all("==" in dependency for dependency in dependencies), "pin every dependency exactly"


def test_final_stage_keeps_no_build_residue() -> None:
    """The image gets the virtualenv and the installed wheel; no source tree, wheel file or pip cache."""
    final = final_stage()
    copies = dockerfile_args("COPY", final)
    assert copies == ["--from=build /opt/venv /opt/venv"]
    runs = dockerfile_args("RUN", final)
    wheel_install = [args for args in runs if "pip install" in args]
    assert len(wheel_install) == 1
    assert "--mount=type=bind,from=build" in wheel_install[0] and "--no-cache-dir" in wheel_install[0]
    assert "--no-deps" in wheel_install[0]
    env = dockerfile_env()
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_runs_as_non_root_user() -> None:
    instructions = final_stage()
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


def test_cmd_is_python_dash_m_service_and_the_worker_command_exists() -> None:
    assert dockerfile_cmd() == ["python", "-m", "service"]
    assert importlib.util.find_spec("service.__main__") is not None
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[WORKER_COMMAND[0]] == "service.cli:main"
    from service.cli import build_parser

    assert build_parser().parse_args(WORKER_COMMAND[1:]).command == "worker"


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
    # HTTP on PORT, KServe V2 gRPC on GRPC_PORT (its default, as the image does not set it).
    exposed = [port for args in dockerfile_args("EXPOSE") for port in args.split()]
    assert exposed == [env["PORT"], str(env.get("GRPC_PORT", Settings.model_fields["grpc_port"].default))]
    (volume,) = dockerfile_args("VOLUME")
    volumes = json.loads(volume) if volume.startswith("[") else volume.split()
    assert any(env["MODEL_DIR"] == v or env["MODEL_DIR"].startswith(v.rstrip("/") + "/") for v in volumes)
    check = dockerfile_healthcheck()
    assert check[0] == "python" and "curl" not in " ".join(check)
    assert "/health/ready" in check[-1] and "/health/ready" in app_get_paths()


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "var", ".git", ".pytest_cache", "deploy"} <= entries
    assert not {"service", "models", "pyproject.toml", "constraints.txt", "README.md"} & entries


# --- docker-compose.yml -------------------------------------------------------------------------


def test_compose_services() -> None:
    """Redis, the API (two replicas or more), a worker and the front door; lstm-serve containers all run
    the one image built from the Dockerfile, the API with the image's CMD, the worker with its command."""
    services = compose()["services"]
    assert set(services) == {"redis", "api", "worker", "proxy"}
    assert services["api"]["deploy"]["replicas"] >= 2
    for name, command in LSTM_SERVE_SERVICES.items():
        service = services[name]
        build = service["build"]
        context, dockerfile = (build, "Dockerfile") if isinstance(build, str) else (build["context"], build.get("dockerfile", "Dockerfile"))
        assert (COMPOSE.parent / context / dockerfile).resolve() == DOCKERFILE
        assert service.get("command") == command, name
        assert "entrypoint" not in service
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["api"]["image"] == services["worker"]["image"]
    assert services["api"]["healthcheck"]["test"] == ["CMD", *dockerfile_healthcheck()]
    # The image's HEALTHCHECK asks the HTTP API; a worker serves none.
    assert services["worker"]["healthcheck"] == {"disable": True}
    assert services["worker"]["command"] == WORKER_COMMAND
    # Only the front door is published: clients never address a replica.
    assert "ports" not in services["api"] and "ports" not in services["worker"]


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    doc = compose()
    redis = doc["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] in ("always", "everysec")
    (mount,) = redis["volumes"]
    source, target = mount.split(":")[:2]
    assert target == "/data" and source in doc["volumes"], "the AOF must outlive the container"


def test_api_and_worker_share_redis_and_the_model_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    seen = {}
    for name in LSTM_SERVE_SERVICES:
        settings = settings_from_env({**dockerfile_env(), **compose_env(name)}, monkeypatch)
        for url in (settings.session_store, settings.job_queue):
            parsed = urlparse(url)
            assert parsed.scheme == "redis" and parsed.hostname == "redis" and (parsed.port or 6379) == 6379
        volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in doc["services"][name]["volumes"]]
        sources = {v.split(":")[0] for v in volumes if v.split(":")[1] == str(settings.model_dir)}
        assert len(sources) == 1, f"{name}: no single volume at MODEL_DIR={settings.model_dir}: {volumes}"
        seen[name] = (settings.session_store, settings.job_queue, settings.session_key_prefix, sources.pop())
    assert len(set(seen.values())) == 1, seen
    volume = seen["api"][3]
    assert not volume.startswith((".", "/")), "a named volume, not a bind mount"
    assert volume in doc["volumes"]


def test_compose_env_names_are_settings() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for name in LSTM_SERVE_SERVICES:
        unknown = set(compose_env(name)) - fields
        assert not unknown, f"{name}: env names the service never reads: {unknown}"


# --- the front door (deploy/compose/haproxy.cfg) --------------------------------------------------


def haproxy_sections() -> dict[str, list[list[str]]]:
    """``{"backend api": [["balance", "roundrobin"], ...], ...}``: each section's lines, split, comments dropped."""
    sections: dict[str, list[list[str]]] = {}
    current = None
    for raw in HAPROXY.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw[0].isspace():
            current = line.strip()
            sections[current] = []
        else:
            assert current is not None, raw
            sections[current].append(line.split())
    return sections


def test_front_door_balances_round_robin_over_ready_api_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("haproxy:")
    (mount,) = proxy["volumes"]
    source, target = mount.split(":")[:2]
    assert (COMPOSE.parent / source).resolve() == HAPROXY and target == "/usr/local/etc/haproxy/haproxy.cfg"
    api = settings_from_env({**dockerfile_env(), **compose_env("api")}, monkeypatch)

    sections = haproxy_sections()
    assert ["mode", "http"] in sections["defaults"], "HTTP mode balances each request, not each connection"
    frontend = sections["frontend http"]
    (bind,) = [line for line in frontend if line[0] == "bind"]
    published = {str(p).split(":")[0]: str(p).split(":")[1] for p in proxy["ports"]}
    assert bind[1] == f":{published[bind[1].lstrip(':')]}"
    backend_name = next(line[1] for line in frontend if line[0] == "default_backend")
    backend = sections[f"backend {backend_name}"]
    assert ["balance", "roundrobin"] in backend
    (check,) = [line for line in backend if line[:2] == ["option", "httpchk"]]
    assert check[2:] == ["GET", "/health/ready"] and "/health/ready" in app_get_paths()
    (servers,) = [line for line in backend if line[0] == "server-template"]
    assert servers[3] == f"api:{api.port}", "the servers are the compose api service on the port it listens on"
    assert int(servers[2]) >= services["api"]["deploy"]["replicas"]
    assert "check" in servers and "resolvers" in servers


def test_front_door_routes_grpc_as_http2_to_the_ready_api_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    api = settings_from_env({**dockerfile_env(), **compose_env("api")}, monkeypatch)
    assert str(api.grpc_port) in [str(port) for port in services["api"]["expose"]]
    published = {str(p).split(":")[0]: str(p).split(":")[1].split()[0] for p in services["proxy"]["ports"]}
    sections = haproxy_sections()
    frontend = sections["frontend grpc"]
    (bind,) = [line for line in frontend if line[0] == "bind"]
    assert bind == ["bind", f":{api.grpc_port}", "proto", "h2"]
    assert published[str(api.grpc_port)] == str(api.grpc_port)
    backend = sections[f"backend {next(line[1] for line in frontend if line[0] == 'default_backend')}"]
    assert ["balance", "roundrobin"] in backend
    assert ["option", "httpchk", "GET", "/health/ready"] in backend
    (servers,) = [line for line in backend if line[0] == "server-template"]
    options = dict(zip(servers[4:], servers[5:], strict=False))
    assert servers[3] == f"api:{api.grpc_port}" and options["proto"] == "h2"
    # Readiness is asked on the HTTP port in HTTP/1.1: the gRPC port speaks only HTTP/2.
    assert options["port"] == str(api.port) and options["check-proto"] == "h1" and "check" in servers
    assert int(servers[2]) >= services["api"]["deploy"]["replicas"] and "resolvers" in servers


def test_front_door_config_is_valid_for_haproxy() -> None:
    haproxy = required_program(shutil.which("haproxy"), "haproxy")
    checked = subprocess.run([haproxy, "-c", "-f", str(HAPROXY)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
