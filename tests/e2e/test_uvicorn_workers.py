"""``WORKERS``: several uvicorn worker processes behind one port, as ``python -m service`` starts them.

With in-process sessions more than one worker is refused at start (a session's next step may reach a worker
that does not hold it). With the Redis store two workers serve predictions and a session stepped on one
worker and then the other continues the same state. Which worker answered is read from the operating system
(the worker process owning the server side of the test's connection), not guessed.
"""

import http.client
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from service.config import Settings
from tests.process import ServiceProcess, drop_redis_keys, service_env

pytestmark = pytest.mark.e2e

REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "m-lstm"
#: Connections opened at most while looking for one served by each worker.
MAX_CONNECTIONS = 64


def test_settings_refuse_several_workers_with_in_memory_sessions() -> None:
    with pytest.raises(ValidationError, match="WORKERS=2 needs SESSION_STORE=redis://"):
        Settings(workers=2, session_store="memory")
    assert Settings(workers=2, session_store=REDIS_URL).workers == 2


def test_service_with_several_workers_and_in_memory_sessions_refuses_to_start(tmp_path: Path) -> None:
    env = service_env(tmp_path / "models", WORKERS="2", SESSION_STORE="memory")
    run = subprocess.run([sys.executable, "-m", "service"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "cannot start" in run.stderr and "WORKERS=2 needs SESSION_STORE=redis://" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "models").exists()  # refused before anything was created


class Connection:
    """One kept-alive HTTP connection to the service."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        self.http.request("POST", path, body=json.dumps(body or {}), headers={"Content-Type": "application/json"})
        response = self.http.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def worker(self, workers: list[psutil.Process]) -> int | None:
        """The pid of the worker holding the server side of this connection (once a request was answered)."""
        local_port = self.http.sock.getsockname()[1]
        for worker in workers:
            if any(c.raddr and c.raddr.port == local_port for c in worker.connections("tcp")):
                return worker.pid
        return None


@pytest.fixture
def two_workers(trained_dir: Path, tmp_path: Path) -> Iterator[ServiceProcess]:
    """One ``python -m service`` with ``WORKERS=2``, sessions in the real Redis under a prefix of its own."""
    shutil.copytree(trained_dir, tmp_path / "models")
    (tmp_path / "cwd").mkdir()
    prefix = f"lstm-serve-workers-{uuid.uuid4().hex}:"
    env = service_env(tmp_path / "models", WORKERS="2", SESSION_STORE=REDIS_URL, SESSION_KEY_PREFIX=prefix, DEMO_MODEL="false")
    service = ServiceProcess(tmp_path / "cwd", env, "workers")
    children: list[psutil.Process] = []
    try:
        service.wait_ready()
        children = psutil.Process(service.process.pid).children(recursive=True)
        yield service
    finally:
        service.terminate()
        for child in children:  # a worker outliving its supervisor would keep the port
            if child.is_running():
                child.kill()
        drop_redis_keys(REDIS_URL, prefix)


def connections_on_two_workers(service: ServiceProcess) -> tuple[Connection, Connection]:
    """Two kept-alive connections accepted by different worker processes."""
    workers = psutil.Process(service.process.pid).children(recursive=True)
    by_worker: dict[int | None, Connection] = {}
    for _ in range(MAX_CONNECTIONS):
        connection = Connection(service.port)
        status, _ = connection.post(f"/models/{MODEL}/predict", {"sequences": [[0.1]]})
        assert status == 200
        by_worker.setdefault(connection.worker(workers), connection)
        by_worker.pop(None, None)
        if len(by_worker) == 2:
            first, second = by_worker.values()
            return first, second
    raise AssertionError(f"{MAX_CONNECTIONS} connections, all on worker(s) {sorted(by_worker)}")


def test_two_workers_serve_predictions_and_a_session_stepped_on_both(two_workers: ServiceProcess) -> None:
    a, b = connections_on_two_workers(two_workers)
    sequences = {"sequences": [[0.1, -0.2, 0.3], [0.5] * 20]}
    status_a, predicted_a = a.post(f"/models/{MODEL}/predict", sequences)
    status_b, predicted_b = b.post(f"/models/{MODEL}/predict", sequences)
    assert status_a == status_b == 200
    assert predicted_a == predicted_b

    values = [0.1, -0.4, 0.9, 0.3, -1.2, 0.5]
    _, alone = a.post(f"/models/{MODEL}/sessions")
    expected = [a.post(f"/sessions/{alone['session_id']}/step", {"values": [v]})[1]["probability"] for v in values]

    _, session = b.post(f"/models/{MODEL}/sessions")
    handed_over = []
    for i, value in enumerate(values):
        status, stepped = (a, b)[i % 2].post(f"/sessions/{session['session_id']}/step", {"values": [value], "seq": i})
        assert status == 200, stepped
        assert stepped["steps_seen"] == i + 1
        handed_over.append(stepped["probability"])
    assert handed_over == pytest.approx(expected, abs=1e-6)
