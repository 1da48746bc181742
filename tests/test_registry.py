"""The model index and the registry of loaded versions.

A fast layer first (no TensorFlow): versions written by a stand-in for ``write_version``, loaded by a fake
loader, two indexes on one folder standing for two replicas. Then the app: a slow load stalls nothing
else, and a session pinned to an evicted version loads it again with the same results.
"""

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from models.architectures import ArchParams, get_architecture
from models.errors import ModelNotFound, VersionNotFound
from models.serving import model_index
from models.serving.model_index import ModelIndex
from models.serving.registry import ModelRegistry
from models.serving.servable import META, ModelMeta, Servable, read_version


@pytest.fixture
def fake_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Versions written without Keras: only their ``meta.json`` (all the index reads)."""

    def write_version(folder: Path, meta: ModelMeta, artifact: Any) -> None:
        (folder / META).write_text(meta.to_json())

    monkeypatch.setattr(model_index, "write_version", write_version)


def add(index: ModelIndex, name: str, units: int = 4) -> ModelMeta:
    return index.add(name, get_architecture("lstm"), ArchParams(max_len=5, units=units), artifact=None, metrics={}, source="test")


class FakeLoader:
    """Stands for ``read_version``: counts loads per folder and may hold them until released."""

    def __init__(self) -> None:
        self.loads: list[Path] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, folder: Path) -> Servable:
        self.loads.append(folder)
        self.started.set()
        assert self.release.wait(30), "never released"
        return SimpleNamespace(meta=ModelMeta.read(folder / META))  # type: ignore[return-value]


def test_concurrent_requests_for_a_loading_version_share_one_load(tmp_path: Path, fake_writes: None) -> None:
    index = ModelIndex(tmp_path)
    add(index, "m")
    loader = FakeLoader()
    loader.release.clear()
    registry = ModelRegistry(index, max_loaded=4, loader=loader)

    async def run() -> list[Servable]:
        waiting = [asyncio.ensure_future(registry.servable("m")) for _ in range(10)]
        await asyncio.to_thread(loader.started.wait, 30)
        # The load runs in a worker thread: the event loop is free meanwhile, and the others wait for it.
        assert not any(task.done() for task in waiting)
        loader.release.set()
        return await asyncio.gather(*waiting)

    servables = asyncio.run(run())
    assert len(loader.loads) == 1
    assert all(s is servables[0] for s in servables)
    assert servables[0].meta.version == 1


def test_least_recently_used_versions_are_evicted_and_load_again_on_use(tmp_path: Path, fake_writes: None) -> None:
    index = ModelIndex(tmp_path)
    for _ in range(3):
        add(index, "m")
    loader = FakeLoader()
    registry = ModelRegistry(index, max_loaded=2, loader=loader)
    incarnation = index.meta("m").incarnation

    async def run() -> None:
        first = await registry.servable("m", 1)
        await registry.servable("m", 2)
        assert await registry.servable("m", 1) is first  # used again: now the most recent
        await registry.servable("m", 3)  # evicts version 2, the least recently used
        assert registry.loaded() == [("m", incarnation, 1), ("m", incarnation, 3)]
        assert len(loader.loads) == 3
        again = await registry.servable("m", 2)
        assert again.meta.version == 2 and len(loader.loads) == 4
        assert registry.loaded() == [("m", incarnation, 3), ("m", incarnation, 2)]

    asyncio.run(run())


def test_a_replica_sees_delete_and_recreate_by_content_whatever_the_folder_times(tmp_path: Path, fake_writes: None) -> None:
    a = ModelIndex(tmp_path)
    b = ModelIndex(tmp_path, sync_interval_s=0.5)
    old = add(a, "m", units=4)
    assert b.meta("m", 1).incarnation == old.incarnation  # a miss looks at once
    stamp = os.stat(tmp_path / "m").st_mtime_ns

    a.delete("m")
    new = add(a, "m", units=3)
    # As a coarse or cached file system would show it: the same folder times as before.
    for path in (tmp_path, tmp_path / "m", tmp_path / "m" / "1"):
        os.utime(path, ns=(stamp, stamp))
    assert new.incarnation != old.incarnation and new.version == 1

    b.refresh(force=True)  # what the next check (at most sync_interval_s later) does
    assert b.meta("m", 1) == new
    assert b.meta("m").params["units"] == 3
    # The old incarnation's version 1 is gone even though a version 1 exists again.
    with pytest.raises(ModelNotFound):
        b.meta("m", 1, incarnation=old.incarnation)

    a.delete("m")
    b.refresh(force=True)
    with pytest.raises(ModelNotFound):
        b.info("m")
    assert (tmp_path / model_index.GENERATION).read_text().split()[0] == "4"  # add, delete, add, delete


def test_a_replica_checks_at_most_every_sync_interval_and_at_once_on_a_miss(tmp_path: Path, fake_writes: None) -> None:
    a = ModelIndex(tmp_path)
    b = ModelIndex(tmp_path, sync_interval_s=3600)
    add(a, "m")
    assert b.info("m").versions == [1]
    add(a, "m")
    assert b.info("m").versions == [1]  # within the interval: the index as last read
    assert b.meta("m", 2).version == 2  # an unknown version looks at once
    with pytest.raises(VersionNotFound):
        b.meta("m", 3)


def test_two_replicas_adding_at_once_take_different_numbers_and_one_incarnation(tmp_path: Path, fake_writes: None) -> None:
    a, b = ModelIndex(tmp_path), ModelIndex(tmp_path)
    with_threads = [threading.Thread(target=add, args=(index, "m")) for index in (a, b) for _ in range(3)]
    for thread in with_threads:
        thread.start()
    for thread in with_threads:
        thread.join()
    a.refresh(force=True)
    info = a.info("m")
    assert info.versions == [1, 2, 3, 4, 5, 6]
    assert len({a.meta("m", v).incarnation for v in info.versions}) == 1


def test_versions_of_a_deleted_model_are_unloaded(tmp_path: Path, fake_writes: None) -> None:
    index = ModelIndex(tmp_path)
    add(index, "gone")
    add(index, "kept")
    registry = ModelRegistry(index, max_loaded=4, loader=FakeLoader())

    async def run() -> None:
        await registry.servable("gone")
        index.delete("gone")
        add(index, "gone")  # recreated: the old version 1 must not answer for the new model
        recreated = await registry.servable("gone")
        assert recreated.meta.incarnation == index.meta("gone").incarnation
        await registry.servable("kept")
        assert [key[0] for key in registry.loaded()] == ["gone", "kept"]
        assert registry.loaded()[0][1] == recreated.meta.incarnation

    asyncio.run(run())


def test_a_slow_load_stalls_neither_other_versions_nor_liveness(app_client: Callable[..., TestClient], trained_dir: Path) -> None:
    # Two loaded at start (m-bi and m-emb, in name order); m-lstm loads on first use, held by the test.
    client = app_client(trained_dir, max_loaded_versions=2)
    registry = client.app.state.registry
    assert [key[0] for key in registry.loaded()] == ["m-bi", "m-emb"]
    started, release = threading.Event(), threading.Event()

    def slow_loader(folder: Path) -> Servable:
        started.set()
        assert release.wait(60), "never released"
        return read_version(folder)

    registry.loader = slow_loader
    slow: list[httpx.Response] = []
    request = threading.Thread(target=lambda: slow.append(client.post("/models/m-lstm/predict", json={"sequences": [[0.5]]})))
    request.start()
    try:
        assert started.wait(60)
        # The load is in progress (held until release): everything else answers meanwhile.
        assert client.get("/health/live").status_code == 200
        other = client.post("/models/m-emb/predict", json={"sequences": [[1, 2, 3]]})
        assert other.status_code == 200, other.text
        assert client.get("/models/m-lstm").status_code == 200
        assert request.is_alive() and not slow
    finally:
        release.set()
        request.join(60)
    assert slow[0].status_code == 200, slow[0].text


def test_a_session_pinned_to_an_evicted_version_loads_it_again(app_client: Callable[..., TestClient], trained_dir: Path) -> None:
    client = app_client(trained_dir, max_loaded_versions=1)
    registry = client.app.state.registry
    values = [0.3, -0.2, 0.8]
    evicted = client.post("/models/m-lstm/sessions").json()["session_id"]
    first = client.post(f"/sessions/{evicted}/step", json={"values": values[:1]})
    assert first.status_code == 200, first.text
    assert client.post("/models/m-td/predict", json={"sequences": [[0.5]]}).status_code == 200
    assert [key[0] for key in registry.loaded()] == ["m-td"]  # m-lstm was unloaded

    after = client.post(f"/sessions/{evicted}/step", json={"values": values[1:]})
    assert after.status_code == 200, after.text
    assert [key[0] for key in registry.loaded()] == ["m-lstm"]
    reference = client.post("/models/m-lstm/sessions").json()["session_id"]
    expected = client.post(f"/sessions/{reference}/step", json={"values": values}).json()["probabilities"]
    assert after.json()["probabilities"] == pytest.approx(expected[1:], abs=1e-6)
