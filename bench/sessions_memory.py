"""How many in-memory sessions one process holds, and whether creating and stepping them slows down as they grow.

    .venv/bin/python bench/sessions_memory.py --sessions 1000000 [--model-dir DIR]

In one process, through the same objects the service uses (``SessionService`` over ``MemorySessionStore``,
``ModelRegistry`` and ``BatchScheduler``; no HTTP, so the figures are the store's and the engine's, not the
server's): creates ``--sessions`` sessions on the benchmark's ``lstm`` model (units 10, max_len 50; trained
through the API as ``bench/run.py`` does unless ``--model-dir`` holds it) and steps each once, in chunks,
reporting per chunk the creation and step rates; then the RSS per session (after minus before, over the
sessions), step latency at that size (``--probe`` single steps on random sessions, p50 and p99) and the time
of one reaper sweep over all of them. Results go to stdout (one JSON line at the end too).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import MODEL_NAME, train_model  # noqa: E402
from models.serving.batching import BatchScheduler  # noqa: E402
from models.serving.session_service import SessionService  # noqa: E402
from models.serving.session_store import MemorySessionStore  # noqa: E402
from models.serving.model_index import ModelIndex  # noqa: E402
from models.serving.registry import ModelRegistry  # noqa: E402

#: Requests created or stepped together: like concurrent clients, so steps batch as in the service.
CONCURRENCY = 64


def rss() -> int:
    """This process's resident set size, bytes."""
    gc.collect()
    return psutil.Process().memory_info().rss


async def in_chunks(items: list[Any], work: Callable[[Any], Awaitable[Any]]) -> tuple[list[Any], float]:
    """``work(item)`` for every item, ``CONCURRENCY`` at a time: the results, and the seconds taken."""
    started = time.perf_counter()
    results = []
    for i in range(0, len(items), CONCURRENCY):
        results.extend(await asyncio.gather(*(work(item) for item in items[i : i + CONCURRENCY])))
    return results, time.perf_counter() - started


async def measure(model_dir: Path, count: int, chunk: int, probe: int, model: str = MODEL_NAME) -> dict[str, float]:
    """Hold ``count`` sessions on ``model``, created and stepped once each; the figures of the module docstring."""
    index = ModelIndex(model_dir)
    index.open()
    models = ModelRegistry(index, max_loaded=1)
    await models.open()
    batcher = BatchScheduler(inline_max_cost=1024)
    store = MemorySessionStore()
    sessions = SessionService(store, models, batcher, default_ttl_s=3600, max_sessions=count + 1000)
    try:
        async def create(model: str) -> str:  # only the id outlives the request, as in the service
            return (await sessions.create(model)).session_id

        async def step(session_id: str) -> None:
            await sessions.step(session_id, [0.5])

        warm, _ = await in_chunks([model] * 1000, create)
        await in_chunks(warm, step)
        before = rss()
        ids: list[str] = []
        started = time.perf_counter()
        for done in range(0, count, chunk):
            size = min(chunk, count - done)
            new, create_s = await in_chunks([model] * size, create)
            _, step_s = await in_chunks(new, step)
            ids.extend(new)
            del new
            print(
                f"{len(ids):>9,} sessions: created {size / create_s:,.0f}/s, stepped {size / step_s:,.0f}/s, "
                f"RSS {(rss() - before) / len(ids):,.0f} B/session",
                flush=True,
            )
        total_s = time.perf_counter() - started
        after = rss()
        latencies = []
        for session_id in random.Random(0).sample(ids, min(probe, len(ids))):
            t0 = time.perf_counter()
            await sessions.step(session_id, [0.25])
            latencies.append(time.perf_counter() - t0)
        latencies.sort()
        t0 = time.perf_counter()
        reaped = await store.reap()
        reap_s = time.perf_counter() - t0
        assert reaped == 0 and (await store.get(ids[-1])).steps_seen == 1
    finally:
        batcher.close()
    return {
        "sessions": count,
        "bytes_per_session": (after - before) / count,
        "create_and_step_per_s": count / total_s,
        "step_p50_ms": 1000 * statistics.median(latencies),
        "step_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "reap_sweep_ms": 1000 * reap_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000, help="live sessions to hold (default 100,000)")
    parser.add_argument("--chunk", type=int, default=100_000, help="report every this many sessions")
    parser.add_argument("--probe", type=int, default=2_000, help="single steps timed at the end (default 2,000)")
    parser.add_argument("--model-dir", type=Path, help="a MODEL_DIR holding the 'bench' model (default: train one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lstm-serve-sessions-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp) / "models"
            (Path(tmp) / "cwd").mkdir()
            train_model(model_dir, Path(tmp) / "cwd")
        result = asyncio.run(measure(model_dir, args.sessions, args.chunk, args.probe))
    print(
        f"{result['sessions']:,} sessions: {result['bytes_per_session']:,.0f} B RSS each, "
        f"{result['create_and_step_per_s']:,.0f} created and stepped per s, single step p50 "
        f"{result['step_p50_ms']:.3f} ms, p99 {result['step_p99_ms']:.3f} ms, reaper sweep {result['reap_sweep_ms']:.0f} ms"
    )
    print("SESSIONS_JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
