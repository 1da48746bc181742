"""A Redis server of the test's own for fault injection (the proxy in front of it: ``tests.proxy.FaultProxy``).

``RedisServer`` runs ``/usr/bin/redis-server`` on a free port (append-only file on, so a restart keeps
the data) and can pause (SIGSTOP), resume, stop and start it again.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.process import free_port

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """One ``redis-server`` process of the test's own, on a free port, its files in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        """Start (again, on the same port and files) and wait until it answers PING."""
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not start")

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (Redis flushes its append-only file) and wait."""
        self.resume()
        self.process.terminate()
        self.process.wait(10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(10)
