"""The model store: versions on disk under ``MODEL_DIR``, loaded and cached for serving.

Layout: ``MODEL_DIR/<name>/<version>/`` holds one complete version (see ``models.serving.servable``). A version
is written into a hidden temporary folder and renamed into place only once complete, so a crash at any
moment leaves either the whole version or nothing; a deleted model is renamed away before removal.
Leftover hidden folders are swept at start-up.

Several replicas may share one ``MODEL_DIR`` (compose mounts one volume into each): the index follows
the folders' modification times, so a version another replica wrote is served here on the next request,
and two replicas saving the same model at once take different version numbers.
"""

import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras

from models.architectures import Architecture, ArchParams
from models.errors import ModelNotFound, VersionNotFound
from models.serving.servable import META, ModelMeta, Servable, read_version, write_version

log = logging.getLogger(__name__)

_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
#: A temporary folder older than this is a crash's leftover, not another replica's save in progress.
_STALE_TEMP_S = 3600.0
#: Folder times tick coarsely: a change this recent may hide a second one in the same tick, so look again.
_SETTLE_NS = 1_000_000_000
#: How stale the index may be about other replicas' changes; saves two stat calls on most requests.
_SYNC_INTERVAL_S = 0.5


def _settled_mtime(path: Path) -> int:
    """The folder's modification time, or 0 (meaning "rescan next time") while it is too recent to trust."""
    mtime = path.stat().st_mtime_ns
    return mtime if time.time_ns() - mtime > _SETTLE_NS else 0


@dataclass(frozen=True)
class ModelInfo:
    """A model as listed: its latest version's metadata and every version number."""

    latest: ModelMeta
    versions: list[int]


class ModelStore:
    """Versions on disk plus the loaded ``Servable`` of each version that has been asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ready = False
        self._metas: dict[str, dict[int, ModelMeta]] = {}
        self._mtimes: dict[str, int] = {}
        self._root_mtime = 0
        self._synced_at: dict[str | None, float] = {}
        self._servables: dict[tuple[str, int], Servable] = {}
        self._lock = threading.RLock()
        self._write_locks: dict[str, threading.Lock] = {}

    def open(self) -> None:
        """Sweep leftovers of interrupted writes, index every version, load each model's latest."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(f"{_TRASH_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.root.glob(f"*/{_TEMP_PREFIX}*"):
            if time.time() - leftover.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(leftover, ignore_errors=True)
        self._sync()
        for name in list(self._metas):
            try:
                self.get(name)
            except Exception:  # noqa: BLE001 - one broken model must not keep the others from serving
                log.exception("Could not load model %s; it stays listed and fails on use", name)
        self.ready = True
        log.info("Model store open at %s: %d model(s)", self.root, len(self._metas))

    def _sync(self, name: str | None = None, force: bool = False) -> None:
        """Bring the index up to date with the folders, rescanning only what changed since last time.

        Checks at most every ``_SYNC_INTERVAL_S`` per name: this process's own writes update the index
        directly, so only other replicas' changes wait that long; a miss (``force``) always looks.
        """
        now = time.monotonic()
        if not force and now - self._synced_at.get(name, -_SYNC_INTERVAL_S) < _SYNC_INTERVAL_S:
            return
        with self._lock:
            self._synced_at[name] = now
            root_mtime = _settled_mtime(self.root)
            if not root_mtime or root_mtime != self._root_mtime:
                self._root_mtime = root_mtime
                on_disk = {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")}
                for gone in set(self._metas) - on_disk:
                    self._forget(gone)
                for new in on_disk - set(self._metas):
                    self._scan(new)
            if name is not None and name in self._metas:
                self._scan(name)

    def _scan(self, name: str) -> None:
        model_dir = self.root / name
        known = self._metas.get(name, {})
        versions = {}
        try:
            mtime = _settled_mtime(model_dir)
            if mtime and self._mtimes.get(name) == mtime:
                return
            for version_dir in model_dir.iterdir():
                if version_dir.name.isdigit() and (version_dir / META).exists():
                    number = int(version_dir.name)
                    versions[number] = known.get(number) or ModelMeta.read(version_dir / META)
        except FileNotFoundError:
            self._forget(name)
            return
        self._mtimes[name] = mtime
        if versions:
            self._metas[name] = versions
        else:
            self._metas.pop(name, None)

    def _forget(self, name: str) -> None:
        self._metas.pop(name, None)
        self._mtimes.pop(name, None)
        for key in [key for key in self._servables if key[0] == name]:
            del self._servables[key]

    def names(self) -> list[str]:
        """Names of every stored model, sorted."""
        with self._lock:
            self._sync()
            return sorted(self._metas)

    def info(self, name: str) -> ModelInfo:
        """Latest metadata and version list of one model."""
        with self._lock:
            self._sync(name)
            if name not in self._metas:
                self._sync(name, force=True)
            versions = self._metas.get(name)
            if not versions:
                raise ModelNotFound(f"No model named '{name}'.", model=name)
            return ModelInfo(latest=versions[max(versions)], versions=sorted(versions))

    def peek(self, name: str, version: int | None = None) -> Servable | None:
        """The servable of a version if it is already loaded, without loading it (cheap enough for an event loop)."""
        with self._lock:
            info = self.info(name)
            return self._servables.get((name, info.versions[-1] if version is None else version))

    def meta(self, name: str, version: int | None = None) -> ModelMeta:
        """Metadata of a version (default: the latest) from the index, without loading it."""
        with self._lock:
            info = self.info(name)
            number = info.versions[-1] if version is None else version
            if number not in info.versions:
                self._sync(name, force=True)
                info = self.info(name)
            if number not in info.versions:
                raise VersionNotFound(
                    f"Model '{name}' has no version {number}.", field="version", expected=info.versions, got=number
                )
            return self._metas[name][number]

    def get(self, name: str, version: int | None = None) -> Servable:
        """The servable of a version (default: the latest), loaded on first use and cached."""
        with self._lock:
            number = self.meta(name, version).version
            cached = self._servables.get((name, number))
            if cached is None:
                cached = read_version(self.root / name / str(number))
                self._servables[(name, number)] = cached
            return cached

    def add(
        self,
        name: str,
        arch: Architecture,
        params: ArchParams,
        artifact: keras.Model,
        metrics: dict[str, float],
        source: str,
        extra: dict[str, Any] | None = None,
    ) -> ModelMeta:
        """Write ``artifact`` as the next version of ``name`` and start serving it; return its metadata."""
        with self._lock:
            write_lock = self._write_locks.setdefault(name, threading.Lock())
        with write_lock:
            with self._lock:
                self._sync(name)
                existing = self._metas.get(name, {})
                version = max(existing, default=0) + 1
                incarnation = existing[max(existing)].incarnation if existing else uuid.uuid4().hex
            meta = ModelMeta(
                name=name,
                architecture=arch.name,
                params=arch.relevant_params(params),
                version=version,
                input_kind=arch.input_kind,
                max_len=params.max_len,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                source=source,
                metrics=metrics,
                extra=extra or {},
                incarnation=incarnation,
                **ModelMeta.shape_of(params),
            )
            model_dir = self.root / name
            model_dir.mkdir(parents=True, exist_ok=True)
            temp = model_dir / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
            temp.mkdir()
            try:
                servable = write_version(temp, meta, artifact)
                self._commit(temp, meta)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            with self._lock:
                self._metas.setdefault(name, {})[meta.version] = servable.meta
                self._servables[(name, meta.version)] = servable
            log.info("Stored %s v%d (%s, %s)", name, meta.version, arch.name, servable.backend)
            return servable.meta

    def _commit(self, temp: Path, meta: ModelMeta) -> None:
        """Rename a complete version into place; if another replica took the number, take the next one."""
        while True:
            target = self.root / meta.name / str(meta.version)
            try:
                temp.rename(target)
                return
            except OSError:
                if not target.exists():
                    raise
            with self._lock:
                self._sync(meta.name)
                meta.version = max(max(self._metas.get(meta.name, {}), default=0), meta.version) + 1
            (temp / META).write_text(meta.to_json())

    def delete(self, name: str) -> None:
        """Remove a model and all its versions; live sessions on it get ``ModelNotFound`` next."""
        with self._lock:
            self.info(name)
            trash = self.root / f"{_TRASH_PREFIX}{name}-{uuid.uuid4().hex}"
            (self.root / name).rename(trash)
            self._forget(name)
        shutil.rmtree(trash, ignore_errors=True)
