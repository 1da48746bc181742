"""Closed-loop session steps over WebSocket streams and over the HTTP step route, for ``bench/run.py``.

wrk speaks no WebSocket, so both transports are driven by one asyncio client in this process: each of
``clients`` workers owns one session and steps it one value at a time, waiting for each answer (a sensor
sending a value, then the next): over HTTP one ``POST /sessions/{id}/step`` per value on a kept-alive
connection (aiohttp), over a stream one message per value on ``/sessions/{id}/stream`` (websockets); and
pipelined over a stream, ``PIPELINE_WINDOW`` messages in flight per client. The client is Python, so its own
cost caps steps/s; the server's CPU per step does not depend on it.

    .venv/bin/python -m bench.stream_load --url http://127.0.0.1:8000 --model demo --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
import httpx
from websockets.asyncio.client import connect

from bench.v2_load import LoadResult

STEP_BODY = json.dumps({"values": [0.5]}, separators=(",", ":"))


async def _drive(step_forever: list, duration: float) -> LoadResult:
    """Run each worker (``worker(deadline, latencies)`` returns its error count) until ``duration`` is over."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration
    t0 = time.perf_counter()
    errors = await asyncio.gather(*(worker(deadline, latencies) for worker in step_forever))
    return LoadResult(len(latencies), sum(errors), time.perf_counter() - t0, latencies)


async def http_steps(url: str, session_ids: list[str], duration: float) -> LoadResult:
    """One worker per session, each stepping it over its own kept-alive HTTP connection."""
    connector = aiohttp.TCPConnector(limit=len(session_ids))
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:

        def worker_for(session_id: str):  # noqa: ANN202 - a closure over the session
            async def worker(deadline: float, latencies: list[float]) -> int:
                errors = 0
                headers = {"Content-Type": "application/json"}
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    async with client.post(f"/sessions/{session_id}/step", data=STEP_BODY, headers=headers) as answer:
                        await answer.read()
                        if answer.status != 200:
                            errors += 1
                            continue
                    latencies.append((time.perf_counter() - started) * 1000.0)
                return errors

            return worker

        return await _drive([worker_for(s) for s in session_ids], duration)


async def stream_steps(url: str, session_ids: list[str], duration: float, window: int = 1) -> LoadResult:
    """One worker per session, each stepping it over its own WebSocket stream, one message per value, with up
    to ``window`` messages sent and not yet answered (1: wait for each answer; more: what a stream allows and
    an HTTP/1.1 connection does not). Latency is from a message's send to its answer."""
    base = "ws" + url.removeprefix("http")

    def worker_for(session_id: str):  # noqa: ANN202 - a closure over the session
        async def worker(deadline: float, latencies: list[float]) -> int:
            errors = 0
            sent: list[float] = []
            async with connect(f"{base}/sessions/{session_id}/stream", ping_interval=None) as ws:
                await ws.recv()  # the session
                while time.perf_counter() < deadline or sent:
                    while len(sent) < window and time.perf_counter() < deadline:
                        sent.append(time.perf_counter())
                        await ws.send(STEP_BODY)
                    answer = await ws.recv(decode=False)
                    started = sent.pop(0)
                    if b'"error"' in answer:
                        errors += 1
                        continue
                    latencies.append((time.perf_counter() - started) * 1000.0)
            return errors

        return worker

    return await _drive([worker_for(s) for s in session_ids], duration)


#: Window of the pipelined stream rows: messages a client keeps in flight.
PIPELINE_WINDOW = 16


def run(kind: str, url: str, session_ids: list[str], duration: float) -> LoadResult:
    """``kind`` is ``http``, ``websocket`` (wait for each answer) or ``websocket-pipelined`` (``PIPELINE_WINDOW``
    in flight); one client per session id."""
    if kind == "http":
        return asyncio.run(http_steps(url, session_ids, duration))
    window = PIPELINE_WINDOW if kind == "websocket-pipelined" else 1
    return asyncio.run(stream_steps(url, session_ids, duration, window))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", default="1,64", help="concurrent clients, one session each (default 1,64)")
    args = parser.parse_args()
    for clients in (int(c) for c in args.clients.split(",")):
        ids = [httpx.post(f"{args.url}/models/{args.model}/sessions").json()["session_id"] for _ in range(clients)]
        for kind in ("http", "websocket", "websocket-pipelined"):
            result = run(kind, args.url, ids, args.duration)
            print(f"{kind:9s} clients={clients:<3d} {result.rps:9.1f} steps/s  p50 {result.percentile(50):6.2f} ms"
                  f"  p99 {result.percentile(99):6.2f} ms  errors {result.errors}")


if __name__ == "__main__":
    main()
