"""The model index: which models and versions are on disk under ``MODEL_DIR``, kept in step across replicas.

Layout::

    MODEL_DIR/.generation                 "<n> <token>": replaced (temp file + rename) after every commit and delete
    MODEL_DIR/<name>/.manifest.json       {"incarnation": ...}: written with the folder, before any version
    MODEL_DIR/<name>/<version>/           one complete version (see ``models.serving.servable``)

A version is written into a hidden temporary folder and renamed into place only once complete, so a crash
at any moment leaves either the whole version or nothing; a model folder is likewise created complete with
its manifest, and a deleted model is renamed away before removal. Leftovers are swept at start-up.

Several replicas (and ``lstm-serve worker`` processes) may share one ``MODEL_DIR``. Each change ends by
replacing ``.generation`` with new content; every replica reads that small file at most every
``sync_interval_s`` (and at once on a miss) and rescans when its content moved. The comparison is by
content, never by modification time: folder times tick coarsely on NFS and overlay file systems, and a
delete + recreate can leave a folder looking unchanged. A recreated model gets a new incarnation in its
manifest, so a replica that still knew the old one drops every version of it and reads the new ones.
Two replicas saving the same model at once take different version numbers.
"""

import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras

from models.architectures import Architecture, ArchParams
from models.errors import ModelNotFound, VersionNotFound
from models.serving.servable import META, ModelMeta, write_version

log = logging.getLogger(__name__)

GENERATION = ".generation"
MANIFEST = ".manifest.json"
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
#: A temporary folder older than this is a crash's leftover, not another replica's save in progress.
_STALE_TEMP_S = 3600.0


@dataclass(frozen=True)
class ModelInfo:
    """A model as listed: its latest version's metadata and every version number."""

    latest: ModelMeta
    versions: list[int]


@dataclass(frozen=True)
class _Model:
    """One model as indexed: the incarnation its folder was created with and the metadata of each version."""

    incarnation: str
    metas: dict[int, ModelMeta] = field(default_factory=dict)


class ModelIndex:
    """The versions on disk: layout, numbering, atomic commit and delete, and sync with other replicas.

    Reads (``names``, ``info``, ``meta``) take no lock: the index is one dictionary replaced whole on
    every change. Only scans and writes serialize, and neither loads a model.
    """

    def __init__(self, root: Path, sync_interval_s: float = 0.5) -> None:
        self.root = root
        self.sync_interval_s = sync_interval_s
        self._models: dict[str, _Model] = {}
        #: The ``.generation`` content the index was last scanned at (None: never scanned).
        self._generation: str | None = None
        self._checked_at = -float("inf")
        self._scan_lock = threading.Lock()
        self._write_locks: dict[str, threading.Lock] = {}

    def open(self) -> None:
        """Sweep leftovers of interrupted writes and index every version."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(f"{_TRASH_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in [*self.root.glob(f"{_TEMP_PREFIX}*"), *self.root.glob(f"*/{_TEMP_PREFIX}*")]:
            if time.time() - leftover.stat().st_mtime > _STALE_TEMP_S:
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        self.refresh(force=True)
        log.info("Model index open at %s: %d model(s)", self.root, len(self._models))

    # -- reading ------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Names of every stored model, sorted."""
        self.refresh()
        return sorted(self._models)

    def info(self, name: str) -> ModelInfo:
        """Latest metadata and version list of one model."""
        model = self._model(name)
        return ModelInfo(latest=model.metas[max(model.metas)], versions=sorted(model.metas))

    def meta(self, name: str, version: int | None = None, incarnation: str | None = None) -> ModelMeta:
        """Metadata of a version (default: the latest), without loading it.

        With ``incarnation``, a model of that name created since (a delete + recreate) is ``ModelNotFound``:
        the model that incarnation named is gone.
        """
        model = self._model(name)
        if (version is not None and version not in model.metas) or (incarnation and model.incarnation != incarnation):
            model = self._model(name, force=True)
        if incarnation and model.incarnation != incarnation:
            raise ModelNotFound(
                f"Model '{name}' was deleted; the model now of that name is another one.", model=name
            )
        number = max(model.metas) if version is None else version
        if number not in model.metas:
            raise VersionNotFound(
                f"Model '{name}' has no version {number}.", field="version", expected=sorted(model.metas), got=number
            )
        return model.metas[number]

    def holds(self, meta: ModelMeta) -> bool:
        """Whether the version ``meta`` describes (same incarnation) is still indexed."""
        model = self._models.get(meta.name)
        return model is not None and model.incarnation == meta.incarnation and meta.version in model.metas

    def folder(self, meta: ModelMeta) -> Path:
        """Where a version's files are."""
        return self.root / meta.name / str(meta.version)

    def _model(self, name: str, force: bool = False) -> _Model:
        self.refresh(force=force)
        model = self._models.get(name)
        if model is None and not force:
            self.refresh(force=True)  # a miss looks at once: another replica may just have written it
            model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"No model named '{name}'.", model=name)
        return model

    # -- staying in step with other replicas ------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Rescan if ``.generation`` moved since the last scan; looks at most every ``sync_interval_s``
        unless ``force``. This process's own writes update the index at once."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.sync_interval_s:
            return
        self._checked_at = now
        # Read before scanning: a change landing during the scan moves the content again, so it is seen next time.
        generation = self._read_generation()
        if generation == self._generation:
            return
        with self._scan_lock:
            if generation == self._generation:
                return
            self._models = self._scan(self._models)
            self._generation = generation

    def _read_generation(self) -> str:
        try:
            return (self.root / GENERATION).read_text()
        except FileNotFoundError:
            return ""

    def _bump_generation(self) -> None:
        """Replace ``.generation`` with new content: a counter for people, a token so that no two are equal."""
        current = self._read_generation().split()
        number = int(current[0]) + 1 if current and current[0].isdigit() else 1
        temp = self.root / f"{_TEMP_PREFIX}generation-{uuid.uuid4().hex}"
        temp.write_text(f"{number} {uuid.uuid4().hex}")
        os.replace(temp, self.root / GENERATION)

    def _scan(self, known: dict[str, _Model]) -> dict[str, _Model]:
        """The index as on disk, reusing the metadata already read for versions of the same incarnation."""
        models = {}
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                model = self._scan_model(folder, known.get(folder.name))
            except FileNotFoundError:  # deleted while being scanned
                continue
            if model.metas:
                models[folder.name] = model
        return models

    def _scan_model(self, folder: Path, known: _Model | None) -> _Model:
        incarnation = _read_incarnation(folder)
        reusable = known.metas if known is not None and known.incarnation == incarnation else {}
        metas = {}
        for version_dir in folder.iterdir():
            if version_dir.name.isdigit() and (version_dir / META).exists():
                number = int(version_dir.name)
                metas[number] = reusable.get(number) or ModelMeta.read(version_dir / META)
        if incarnation is None:  # a folder written before manifests: its versions carry the incarnation
            incarnation = metas[max(metas)].incarnation if metas else ""
        return _Model(incarnation, metas)

    # -- writing ------------------------------------------------------------------------------------------

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
        """Write ``artifact`` as the next version of ``name`` (creating the model if needed); its metadata."""
        with self._scan_lock:
            write_lock = self._write_locks.setdefault(name, threading.Lock())
        with write_lock:
            self.refresh(force=True)
            incarnation = self._ensure_model_folder(name)
            model = self._models.get(name)
            known = model.metas if model is not None and model.incarnation == incarnation else {}
            meta = ModelMeta(
                name=name,
                architecture=arch.name,
                params=arch.relevant_params(params),
                version=max(known, default=0) + 1,
                input_kind=arch.input_kind,
                max_len=params.max_len,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                source=source,
                metrics=metrics,
                extra=extra or {},
                incarnation=incarnation,
                **ModelMeta.shape_of(params),
            )
            temp = self.root / name / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
            temp.mkdir()
            try:
                write_version(temp, meta, artifact)
                self._commit(temp, meta)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            with self._scan_lock:
                current = self._models.get(name)
                metas = current.metas if current is not None and current.incarnation == incarnation else {}
                self._models = {**self._models, name: _Model(incarnation, {**metas, meta.version: meta})}
                self._bump_generation()
            log.info("Stored %s v%d (%s, %s)", name, meta.version, arch.name, meta.extra.get("backend"))
            return meta

    def _ensure_model_folder(self, name: str) -> str:
        """The incarnation of ``name``'s folder, creating the folder (with a new incarnation) if there is none."""
        folder = self.root / name
        incarnation = _read_incarnation(folder) if folder.is_dir() else None
        if incarnation is not None:
            return incarnation
        if folder.is_dir():  # written before manifests: keep the incarnation its versions carry
            metas = [ModelMeta.read(p / META) for p in folder.iterdir() if p.name.isdigit() and (p / META).exists()]
            incarnation = max(metas, key=lambda m: m.version).incarnation if metas else uuid.uuid4().hex
            _write_manifest(folder, incarnation)
            return incarnation
        temp = self.root / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        temp.mkdir()
        _write_manifest(temp, uuid.uuid4().hex)
        try:
            temp.rename(folder)
        except OSError:
            shutil.rmtree(temp, ignore_errors=True)
            if not folder.is_dir():
                raise
            # Another replica created it first: its incarnation is this model's.
        return _read_incarnation(folder) or ""

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
            taken = [int(p.name) for p in (self.root / meta.name).iterdir() if p.name.isdigit()]
            meta.version = max([*taken, meta.version]) + 1
            (temp / META).write_text(meta.to_json())

    def delete(self, name: str) -> None:
        """Remove a model and all its versions; sessions on it get ``ModelDeleted`` next."""
        self._model(name, force=True)  # ModelNotFound for a name with no version (or none at all)
        with self._scan_lock:
            trash = self.root / f"{_TRASH_PREFIX}{name}-{uuid.uuid4().hex}"
            try:
                (self.root / name).rename(trash)
            except FileNotFoundError:
                raise ModelNotFound(f"No model named '{name}'.", model=name) from None
            self._models = {key: model for key, model in self._models.items() if key != name}
            self._bump_generation()
        shutil.rmtree(trash, ignore_errors=True)


def _read_incarnation(folder: Path) -> str | None:
    """The incarnation in a model folder's manifest; None for a folder written before manifests."""
    try:
        return json.loads((folder / MANIFEST).read_text())["incarnation"]
    except FileNotFoundError:
        if not folder.is_dir():
            raise
        return None


def _write_manifest(folder: Path, incarnation: str) -> None:
    temp = folder / f"{_TEMP_PREFIX}manifest-{uuid.uuid4().hex}"
    temp.write_text(json.dumps({"incarnation": incarnation}))
    os.replace(temp, folder / MANIFEST)
