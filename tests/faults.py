"""Fault injection against real processes: a Redis server of our own and a TCP proxy in front of it.

``RedisServer`` runs ``/usr/bin/redis-server`` on a free port (append-only file on, so a restart keeps
the data) and can pause (SIGSTOP), resume, stop and start it again. ``FaultProxy`` forwards a port to it
from an asyncio loop in a thread and can hold back replies (delay or drop them) and requests (delay them),
for a request containing some bytes (a script's SHA picks one command of the session store) or for any
at random.
"""

import asyncio
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
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


@dataclass
class _Rule:
    """Hold back the reply after a request containing ``after``: ``delay_s`` seconds (up to ``delay_s`` at
    random when ``jitter``), or for ever (``None``); ``times`` times; each time with ``probability``."""

    after: bytes
    delay_s: float | None
    times: int | None
    probability: float
    jitter: bool
    partition: bool


@dataclass
class _Delay:
    """Forward a request containing ``after`` only ``delay_s`` later (it may reach Redis after its sender gave up)."""

    after: bytes
    delay_s: float
    times: int


@dataclass(eq=False)
class _Link:
    """One proxied connection: replies wait ``delay_s`` once, or are all dropped once ``dropping``."""

    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    delay_s: float = 0.0
    dropping: bool = False


class FaultProxy:
    """A TCP proxy to ``upstream_port`` on loopback that can delay or drop replies."""

    def __init__(self, upstream_port: int, seed: int = 0) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._rules: list[_Rule] = []
        self._delays: list[_Delay] = []
        self._links: set[_Link] = set()
        self._partitioned = False
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", self.port), self._loop
        ).result(10)

    def hold_replies(self, after: bytes = b"", delay_s: float | None = None, times: int | None = 1,
                     probability: float = 1.0, jitter: bool = False, partition: bool = False) -> None:
        """Delay (``delay_s``; a random part of it with ``jitter``) or drop (``None``: that connection answers
        nothing more) the reply following a request that contains ``after`` (any request when empty),
        ``times`` times (``None``: until cleared), each time with ``probability``. With ``partition`` the
        proxy then also stops forwarding anything, on every connection, until ``clear``: the request that
        matched reached Redis, nothing after it does."""
        rule = _Rule(after, delay_s, times, probability, jitter, partition)
        self._loop.call_soon_threadsafe(self._rules.append, rule)

    def hold_requests(self, after: bytes, delay_s: float, times: int = 1) -> None:
        """Forward the next ``times`` requests containing ``after`` ``delay_s`` late (and what follows them on
        their connection), even if their sender closed the connection meanwhile."""
        delay = _Delay(after, delay_s, times)
        self._loop.call_soon_threadsafe(self._delays.append, delay)

    def clear(self) -> None:
        """No more faults (requests and replies already held keep their fate)."""

        def clear() -> None:
            self._rules.clear()
            self._delays.clear()
            self._partitioned = False

        self._loop.call_soon_threadsafe(clear)

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for link in list(self._links):
                for writer in link.writers:
                    writer.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        link = _Link(writers=[client_writer, upstream_writer])
        self._links.add(link)
        try:
            await asyncio.gather(
                self._requests(link, client_reader, upstream_writer),
                self._replies(link, upstream_reader, client_writer),
            )
        finally:
            self._links.discard(link)
            for writer in link.writers:
                writer.close()

    async def _requests(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self._partitioned:
                    continue
                self._apply_rules(link, data)
                for delay in self._delays:
                    if delay.after in data and delay.times > 0:
                        delay.times -= 1
                        await asyncio.sleep(delay.delay_s)
                        break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def _apply_rules(self, link: _Link, request: bytes) -> None:
        for rule in self._rules:
            if rule.after in request and (rule.times is None or rule.times > 0):
                if self._random.random() >= rule.probability:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                self._partitioned = self._partitioned or rule.partition
                if rule.delay_s is None:
                    link.dropping = True
                else:
                    delay = rule.delay_s * self._random.random() if rule.jitter else rule.delay_s
                    link.delay_s = max(link.delay_s, delay)

    async def _replies(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if link.dropping or self._partitioned:
                    continue
                if link.delay_s:
                    delay, link.delay_s = link.delay_s, 0.0
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
