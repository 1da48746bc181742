"""TCP proxies on loopback for tests that run real processes, served from an asyncio loop in a thread.

``RoundRobinProxy`` is the compose front door's job (HAProxy there): each new client connection goes to the
next backend in turn. ``FaultProxy`` stands between the service and Redis and injects faults: it can delay
or drop replies and delay requests, for a request containing some bytes (a script's SHA picks one command
of the session store) or for any request at random, and can cut every connection.
"""

import asyncio
import itertools
import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.process import free_port


@dataclass(eq=False)
class Link:
    """One proxied connection: replies wait ``delay_s`` once, or are all dropped once ``dropping``."""

    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    delay_s: float = 0.0
    dropping: bool = False


class LoopbackProxy:
    """Listens on ``127.0.0.1:port`` and forwards each connection to the backend port ``_backend`` picks.

    A context manager: entering starts the loop thread, leaving closes every connection. Subclasses may
    hold back data in ``_request`` and ``_reply`` (return ``False`` to drop it).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)

    def __enter__(self) -> "LoopbackProxy":
        self._thread.start()
        assert self._started.wait(10), "proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _backend(self) -> int:
        raise NotImplementedError

    async def _request(self, link: Link, data: bytes) -> bool:
        return True

    async def _reply(self, link: Link, data: bytes) -> bool:
        return True

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend = self._backend()
        link = Link(writers=[client_writer])
        try:
            backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", backend)
            link.writers.append(backend_writer)
            await asyncio.gather(
                self._pipe(client_reader, backend_writer, link, self._request),
                self._pipe(backend_reader, client_writer, link, self._reply),
            )
        except (asyncio.CancelledError, OSError):  # the proxy is closing, or the backend is down
            pass
        finally:
            for writer in link.writers:
                writer.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: Link,
        forward: Callable[[Link, bytes], Awaitable[bool]],
    ) -> None:
        try:
            while data := await reader.read(65536):
                if await forward(link, data):
                    writer.write(data)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


class RoundRobinProxy(LoopbackProxy):
    """``connections`` counts the connections handed to each backend port."""

    def __init__(self, backend_ports: list[int]) -> None:
        super().__init__()
        self.connections: Counter[int] = Counter()
        self._next = itertools.cycle(backend_ports)

    def _backend(self) -> int:
        backend = next(self._next)
        self.connections[backend] += 1
        return backend


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


class FaultProxy(LoopbackProxy):
    """A proxy to ``upstream_port`` (Redis) that injects faults; ``clear`` ends them."""

    def __init__(self, upstream_port: int, seed: int = 0) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self._rules: list[_Rule] = []
        self._delays: list[_Delay] = []
        self._partitioned = False
        self._random = random.Random(seed)

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

    def _backend(self) -> int:
        return self.upstream_port

    async def _request(self, link: Link, data: bytes) -> bool:
        if self._partitioned:
            return False
        for rule in self._rules:
            if rule.after in data and (rule.times is None or rule.times > 0):
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
        for delay in self._delays:
            if delay.after in data and delay.times > 0:
                delay.times -= 1
                await asyncio.sleep(delay.delay_s)
                break
        return True

    async def _reply(self, link: Link, data: bytes) -> bool:
        if link.dropping or self._partitioned:
            return False
        if link.delay_s:
            delay, link.delay_s = link.delay_s, 0.0
            await asyncio.sleep(delay)
        return True
