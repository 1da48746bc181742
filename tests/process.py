"""Real ``python -m service`` processes for end-to-end tests and load drivers.

Started exactly as the Dockerfile's CMD starts the service (configured only through the environment),
from an empty working folder, with the log in a file and an httpx client on its port.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from service.config import Settings
from tests.test_deploy import WORKER_COMMAND, dockerfile_cmd

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 90.0

#: Float sequences for the ``lstm`` models trained on ``noisy_trend`` (ragged: the short one is pre-padded).
SEQUENCES = [
    [round(0.03 * i, 3) for i in range(30)],
    [round(0.9 - 0.03 * i, 3) for i in range(30)],
    [0.5] * 30,
    [0.2, 0.4, 0.6, 0.8],
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """A process of ours with its output in a log file; stopped with SIGTERM or killed outright."""

    def __init__(self, command: list[str], workdir: Path, env: dict[str, str], log_name: str) -> None:
        self.log_path = workdir / f"{log_name}.log"
        self._log = self.log_path.open("wb")
        # cwd is an empty folder, as the image's WORKDIR: no .env file, no source tree to import from.
        self.process = subprocess.Popen(command, env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (what ``docker stop`` and Kubernetes send) and the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout} s after SIGTERM:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL (``kill -9``), if still running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


class WorkerProcess(ManagedProcess):
    """One ``lstm-serve worker`` process, started with the command compose and Kubernetes give it."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str) -> None:
        executable = Path(sys.executable).parent / WORKER_COMMAND[0]
        super().__init__([str(executable), *WORKER_COMMAND[1:]], workdir, env, name)

    @property
    def owner(self) -> str:
        """How job records name this process (``host:pid``)."""
        return f"{socket.gethostname()}:{self.process.pid}"


class ServiceProcess(ManagedProcess):
    """One ``python -m service`` process, its log in a file and an httpx client on its port."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str) -> None:
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        command = dockerfile_cmd()
        assert command[0] == "python"
        super().__init__([sys.executable, *command[1:]], workdir, env, f"{name}-{self.port}")
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited with {self.process.returncode} before ready:\n{self.log_tail()}")
            try:
                if self.http.get("/health/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        self.http.close()
        super().kill()

    def train(self, name: str, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        response = self.http.post(f"/models/{name}/train", json=body, headers=headers)
        assert response.status_code == 202, response.text
        return self.wait_job(response.json()["job_id"])

    def wait_job(self, job_id: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                assert job["status"] == "succeeded", job
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} unfinished after {timeout} s:\n{self.log_tail()}")

    def predict(self, name: str, sequences: list[list[float]] = SEQUENCES) -> dict[str, Any]:
        response = self.http.post(f"/models/{name}/predict", json={"sequences": sequences})
        assert response.status_code == 200, response.text
        return response.json()


def service_env(model_dir: Path, **overrides: str) -> dict[str, str]:
    """The process environment: this one without any service setting, then the given ones."""
    env = {key: value for key, value in os.environ.items()
           if key.upper() not in {name.upper() for name in Settings.model_fields}}
    # No gRPC unless asked (GRPC_PORT=<free_port()>): replicas on one machine would all bind the default 8001.
    env.update(HOST="127.0.0.1", PORT=str(free_port()), GRPC_PORT="0", MODEL_DIR=str(model_dir), PYTHONUNBUFFERED="1")
    env.update(overrides)
    return env


Start = Callable[..., ServiceProcess]


def process_factory(workdir: Path) -> tuple[Start, list[ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(model_dir: Path, name: str = "service", **overrides: str) -> ServiceProcess:
        service = ServiceProcess(workdir, service_env(model_dir, **overrides), name)
        started.append(service)
        return service

    return start, started


def versions_on_disk(model_dir: Path, name: str) -> list[str]:
    """Everything in a model's folder but its manifest, sorted: complete versions only, unless a temporary
    folder or a half version was left behind."""
    from models.serving.model_index import MANIFEST  # here: load drivers import this module without TensorFlow

    folder = model_dir / name
    return sorted(p.name for p in folder.iterdir() if p.name != MANIFEST) if folder.exists() else []


def drop_redis_keys(url: str, prefix: str) -> None:
    """Delete the keys a test's processes wrote under their own ``SESSION_KEY_PREFIX`` (and nobody else's)."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
