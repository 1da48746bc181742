"""The model registry: the versions loaded for serving, the one way any caller gets a ``Servable``.

``await registry.servable(name, version)`` answers from memory when the version is loaded (a dictionary
read on the event loop, no lock). Otherwise one load per version runs in a worker thread, and every request
for that version meanwhile awaits the same load; requests for other versions, and everything else on the
event loop, go on as normal, since nothing here blocks the loop or holds a lock across a load.

At most ``max_loaded`` versions stay loaded: loading one more evicts the least recently used. A session
pinned to an evicted version loads it again on its next step. A deleted model's versions never answer once
the index shows the delete (every request asks the index first), and are dropped at the next load; a loaded
version is keyed by its incarnation too, so old weights can never answer for a new model of the same name.
"""

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread

from models.errors import ModelNotFound
from models.serving.model_index import ModelIndex
from models.serving.servable import ModelMeta, Servable, read_version

log = logging.getLogger(__name__)

#: A loaded version: (model name, incarnation, version number).
Key = tuple[str, str, int]


class ModelRegistry:
    """Loaded versions over a ``ModelIndex``, least recently used evicted past ``max_loaded``.

    Use it from one event loop (the app's): its bookkeeping is plain dictionaries touched only there.
    """

    def __init__(self, index: ModelIndex, max_loaded: int, loader: Callable[[Path], Servable] = read_version) -> None:
        self.index = index
        self.max_loaded = max_loaded
        #: Loads a committed version folder; a test may hand in a slower one.
        self.loader = loader
        self.ready = False
        self._loaded: OrderedDict[Key, Servable] = OrderedDict()
        self._loading: dict[Key, asyncio.Future[Servable]] = {}

    async def open(self) -> None:
        """Load the latest version of each model (as many as fit), then report ready."""
        for name in self.index.names()[: self.max_loaded]:
            try:
                await self.servable(name)
            except Exception:  # noqa: BLE001 - one broken model must not keep the others from serving
                log.exception("Could not load model %s; it stays listed and fails on use", name)
        self.ready = True

    def loaded(self) -> list[Key]:
        """The loaded versions, least recently used first."""
        return list(self._loaded)

    async def servable(self, name: str, version: int | None = None, incarnation: str | None = None) -> Servable:
        """The servable of a version (default: the latest), loaded on first use.

        ``ModelNotFound`` / ``VersionNotFound`` for what the index does not hold; with ``incarnation``, also
        when the model of that name is no longer that incarnation (see ``ModelIndex.meta``).
        """
        meta = self.index.meta(name, version, incarnation)
        key = (meta.name, meta.incarnation, meta.version)
        servable = self._loaded.get(key)
        if servable is not None:
            self._loaded.move_to_end(key)
            return servable
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(key, meta))
        # Shielded: a caller that gives up (a client gone) must not cancel the load others are awaiting.
        return await asyncio.shield(loading)

    async def _load(self, key: Key, meta: ModelMeta) -> Servable:
        try:
            servable = await anyio.to_thread.run_sync(self.loader, self.index.folder(meta))
        except FileNotFoundError:
            raise ModelNotFound(f"Model '{meta.name}' was deleted while version {meta.version} loaded.", model=meta.name) from None
        finally:
            del self._loading[key]
        self._forget_removed()
        self._loaded[key] = servable
        while len(self._loaded) > self.max_loaded:
            evicted, _ = self._loaded.popitem(last=False)
            log.info("Unloaded %s v%d (least recently used of %d loaded)", evicted[0], evicted[2], self.max_loaded + 1)
        return servable

    def _forget_removed(self) -> None:
        """Drop loaded versions the index no longer holds (deleted, or their model recreated)."""
        for key in [key for key, servable in self._loaded.items() if not self.index.holds(servable.meta)]:
            del self._loaded[key]
