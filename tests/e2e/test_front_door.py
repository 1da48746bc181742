"""The compose front door run for real: HAProxy with ``deploy/compose/haproxy.cfg`` before two real replicas.

Only what needs Docker is rewritten (``front_door_config``): each ``server-template`` on the ``api`` service
becomes one ``server`` line per replica on its local ports, the fronts bind local free ports, and the Docker
DNS resolver goes. Every other line (balancing, health checks, HTTP/2 for gRPC, retries) is the file's own.
HTTP and KServe V2 gRPC calls (``tritonclient.grpc`` at its defaults) are spread over both replicas, and a
replica killed with SIGKILL costs no failed call: the front door sends the next ones to the other.
"""

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as triton_grpc

from tests.process import ServiceProcess, free_port, process_factory
from tests.test_clients import step_tensor
from tests.test_deploy import HAPROXY
from tests.test_operations import _sample
from tests.system import required_program

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

#: The ports the compose file's api replicas listen on (HTTP, gRPC): what the config's server lines name.
COMPOSE_PORTS = ("8000", "8001")
START_TIMEOUT_S = 20.0
SEQUENCE = [0.1, 0.4, 0.2, 0.9]


def front_door_config(replicas: list[tuple[int, int]], http_port: int, grpc_port: int) -> str:
    """``deploy/compose/haproxy.cfg`` for local replicas (``(http, grpc)`` ports each) and local front ports."""
    fronts = dict(zip(COMPOSE_PORTS, (http_port, grpc_port), strict=True))
    lines: list[str] = []
    in_resolvers = False
    for raw in HAPROXY.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if raw and not raw[0].isspace():
            in_resolvers = words[:1] == ["resolvers"]
        if in_resolvers:
            continue
        if words[:1] == ["bind"]:
            lines.append(raw.replace(words[1], f"127.0.0.1:{fronts[words[1].lstrip(':')]}"))
        elif words[:1] == ["server-template"]:
            prefix, address, options = words[1], words[3], words[4:]
            for i, ports in enumerate(replicas):
                local = dict(zip(COMPOSE_PORTS, map(str, ports), strict=True))
                moved = " ".join(_local_options(options, local))
                lines.append(f"    server {prefix}{i} 127.0.0.1:{local[address.split(':')[1]]} {moved}")
        else:
            lines.append(raw)
    return "\n".join(lines) + "\n"


def _local_options(options: list[str], local: dict[str, str]) -> list[str]:
    """A server line's options for a replica on this machine: its own port for ``port``, no Docker resolver."""
    kept: list[str] = []
    given = iter(options)
    for option in given:
        if option in ("resolvers", "init-addr"):  # Docker's DNS names the replicas; these have fixed addresses
            next(given)
        elif option == "port":
            kept += [option, local[next(given)]]
        else:
            kept.append(option)
    return kept


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"haproxy exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"haproxy not listening on {port} after {START_TIMEOUT_S} s")


@pytest.fixture
def front_door(trained_dir: Path, tmp_path: Path) -> Iterator[tuple[list[ServiceProcess], int, int]]:
    """Two replicas with HTTP and gRPC, and HAProxy before them: the replicas, the front HTTP and gRPC ports."""
    haproxy = required_program(shutil.which("haproxy"), "haproxy")
    start, started = process_factory(tmp_path)
    grpc_ports = [free_port(), free_port()]
    replicas = [start(trained_dir, f"r{i}", GRPC_PORT=str(port), DEMO_MODEL="false") for i, port in enumerate(grpc_ports)]
    http_port, grpc_port = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(front_door_config([(r.port, g) for r, g in zip(replicas, grpc_ports, strict=True)], http_port, grpc_port))
    proxy = None
    try:
        for replica in replicas:
            replica.wait_ready()
        # Started once the replicas are ready: its first health checks then pass (a replica that failed them
        # would wait two more passing checks, `inter` apart, before it took calls).
        with (tmp_path / "haproxy.log").open("wb") as log:
            proxy = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        wait_listening(http_port, proxy)
        wait_listening(grpc_port, proxy)
        yield replicas, http_port, grpc_port
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait(timeout=10)
        for replica in started:
            replica.kill()


def counted(replica: ServiceProcess, name: str, labels: str) -> float:
    return _sample(replica.http.get("/metrics").text, name, labels) or 0.0


def test_the_front_door_spreads_http_and_grpc_over_the_replicas_and_routes_around_a_killed_one(
    front_door: tuple[list[ServiceProcess], int, int],
) -> None:
    replicas, http_port, grpc_port = front_door
    expected = replicas[0].predict("m-lstm", [SEQUENCE[:1]])["predictions"][0]["probability"]
    grpc_infers = 'lstm_serve_grpc_requests_total', '{code="OK",method="ModelInfer"}'
    http_predicts = 'lstm_serve_http_requests_total', '{method="POST",route="/models/{name}/predict",status="200"}'
    before = [counted(r, *http_predicts) for r in replicas]
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30.0)
    try:
        def call_both() -> None:
            answer = client.infer("m-lstm", [step_tensor(triton_grpc, "m-lstm", SEQUENCE[0])])
            assert float(answer.as_numpy("probability").reshape(-1)[0]) == pytest.approx(expected, abs=1e-7)
            response = http.post("/models/m-lstm/predict", json={"sequences": [SEQUENCE[:1]]})
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-7)

        for _ in range(6):
            call_both()
        for replica, old in zip(replicas, before, strict=True):
            assert counted(replica, *grpc_infers) >= 1, "every replica answers gRPC calls"
            assert counted(replica, *http_predicts) > old, "every replica answers HTTP requests"

        replicas[0].kill()  # SIGKILL: its connections are cut, its port refuses
        for _ in range(6):
            call_both()
        assert counted(replicas[1], *grpc_infers) >= 6
    finally:
        client.close()
        http.close()
