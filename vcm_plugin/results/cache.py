"""The shared unit cache: units finished by earlier runs, reused by a run in another output folder.

A researcher evaluating a new codec against the same anchors computes the anchors once: every
unit a run finishes is also written to one store shared by the user's runs, and a run copies
the units it needs from there into its own store instead of computing them, with their bits,
times, predictions, hashes and image metrics. The cache IS a
:class:`~vcm_plugin.results.store.ResultsStore` (the same rows) keyed by the same
:func:`~vcm_plugin.results.store.unit_key`, the only identity of a unit (codec name, parameters
and version, quality, scale, task model and its weights, dataset annotations, image), so a unit
is reused exactly when a run's own store would reuse it. The file is
``units-v{SCHEMA_VERSION}.sqlite`` in the cache folder: entries written under another store
schema are in another file and never opened. Only finished (``ok``) units are cached; the
``codec`` / ``task`` columns hold the registered codec and task-model names (a run files a
copied unit under its own config labels).

Where: ``cache: PATH`` in the run config; ``cache: auto`` (the default) is ``$VCM_CACHE``, else
``$XDG_CACHE_HOME/vcm-plugin/units`` (``~/.cache/vcm-plugin/units``); ``cache: null`` or ``VCM_CACHE=off``
turns it off. ``vcm cache list`` / ``vcm cache prune`` look at and trim it; ``vcm cache import RUN_DIR``
seeds it with the units of a run made before the cache existed (:func:`import_run`).

Never in a run's way: a run's own store stays its source of truth (a unit is written there
first). Concurrent runs share the file (SQLite WAL journal, waiting up to :data:`BUSY_TIMEOUT_S`
for a writer); any failure (a read-only folder, a full disk, a damaged file, a lock held too
long) logs one warning naming the file, and the run goes on without the cache. SQLite's WAL
needs the processes on one machine: do not share a cache folder over NFS between machines (a
Dask run is fine: only its client process reads and writes the cache).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from vcm_plugin.config import CACHE_AUTO
from vcm_plugin.errors import VcmError
from vcm_plugin.hashing import user_cache_dir
from vcm_plugin.results.store import SCHEMA_VERSION, ResultsStore, StoreError, UnitRow

log = logging.getLogger(__name__)

#: environment variable naming the cache folder for ``cache: auto`` (``off`` turns the cache off)
CACHE_ENV = "VCM_CACHE"
#: values of $VCM_CACHE that turn the cache off
OFF_WORDS = frozenset({"", "off", "none", "null", "no", "false", "0"})
#: the cache file in its folder (a new store schema gets a new file)
CACHE_FILE = f"units-v{SCHEMA_VERSION}.sqlite"
#: seconds a run waits for another run's write to the cache before going on without it
BUSY_TIMEOUT_S = 30.0


class CacheError(VcmError, RuntimeError):
    """``vcm cache`` cannot read or change the cache (names the file)."""


def default_cache_dir() -> Path:
    """The user's cache folder: ``$XDG_CACHE_HOME/vcm-plugin/units``, else ``~/.cache/vcm-plugin/units``."""
    return user_cache_dir() / "units"


def resolve_cache_dir(setting: str | None = CACHE_AUTO) -> Path | None:
    """The cache folder of a config's ``cache`` setting: a path; ``auto``: ``$VCM_CACHE``, else
    :func:`default_cache_dir`; None (or ``$VCM_CACHE`` ``off``): no cache."""
    if setting is None:
        return None
    if setting == CACHE_AUTO:
        env = os.environ.get(CACHE_ENV)
        if env is None:
            return default_cache_dir()
        if env.strip().lower() in OFF_WORDS:
            return None
        setting = env
    return Path(setting).expanduser()


def cache_files(folder: str | Path) -> list[Path]:
    """The files of the cache in ``folder``: the SQLite file and its WAL and shared-memory files."""
    path = Path(folder) / CACHE_FILE
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _reason(exc: BaseException) -> str:
    """What went wrong with the cache file, with the likely cause."""
    cause = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ is not None else exc
    text = (cause.strerror or str(cause)) if isinstance(cause, OSError) else str(cause)
    low = text.lower()
    if "not a database" in low or "malformed" in low or "damaged" in low:
        return f"{text}: the file is damaged (`vcm cache prune --all` removes it)"
    if "full" in low:
        return f"{text}: the disk is full"
    if "readonly" in low or "read-only" in low or "permission" in low or "unable to open" in low:
        return f"{text}: the cache folder is not writable"
    if "locked" in low or "busy" in low:
        return f"{text}: another run held it for more than {BUSY_TIMEOUT_S:g} s"
    return text


class UnitCache(contextlib.AbstractContextManager):
    """The shared unit cache in ``folder`` (None: no cache), as one run uses it.

    The file is opened on first use (a read of a cache that does not exist creates nothing).
    The first failure logs a warning naming the file and turns the cache off for the rest of
    the run: reads then find nothing and writes do nothing; nothing here raises.
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.path = None if self.folder is None else self.folder / CACHE_FILE
        self._store: ResultsStore | None = None
        self._off = self.path is None

    @property
    def enabled(self) -> bool:
        """Whether the cache is configured and has not failed."""
        return not self._off

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(sqlite3.Error):
                self._store.close()
            self._store = None

    def _fail(self, what: str, exc: BaseException) -> None:
        log.warning("shared unit cache %s: cannot %s it (%s); this run goes on without the cache, its own "
                    "results are unaffected", self.path, what, _reason(exc))
        self.close()
        self._off = True

    def _open(self, create: bool) -> ResultsStore | None:
        if self._off or self.path is None or self.folder is None:
            return None
        if self._store is None:
            if not create and not self.path.exists():
                return None
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._store = ResultsStore(self.path, timeout=BUSY_TIMEOUT_S)
            except (OSError, StoreError, sqlite3.Error, ValueError) as exc:
                self._fail("open", exc)
        return self._store

    def rows(self, keys: set[str], with_predictions: bool = True) -> Iterator[UnitRow]:
        """The finished (``ok``) cached units among ``keys``, in key order (none once the cache is off)."""
        store = self._open(create=False) if keys else None
        if store is None:
            return
        try:
            for row in store.rows(keys, with_predictions):
                if row.status == "ok":
                    yield row
        except StoreError as exc:
            self._fail("read", exc)

    def add(self, rows: Iterable[UnitRow]) -> int:
        """Store the finished rows (failed ones are never cached), each committed; how many were stored."""
        done = [row for row in rows if row.status == "ok"]
        store = self._open(create=True) if done else None
        if store is None:
            return 0
        try:
            for row in done:
                store.put(row)
        except StoreError as exc:
            self._fail("write to", exc)
            return 0
        return len(done)


# -- `vcm cache` ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _opened(folder: Path) -> Iterator[ResultsStore]:
    """The cache store in ``folder``; a store error inside becomes a :class:`CacheError` naming the file."""
    try:
        with ResultsStore(folder / CACHE_FILE, timeout=BUSY_TIMEOUT_S) as store:
            yield store
    except StoreError as exc:
        raise _error(folder, exc) from exc


def _error(folder: Path, exc: BaseException) -> CacheError:
    """The :class:`CacheError` naming the cache file in ``folder`` of ``exc``, with its likely cause."""
    return CacheError(f"shared unit cache {folder / CACHE_FILE}: {_reason(exc)}")


def cache_size(folder: str | Path) -> int:
    """Bytes on disk of the cache in ``folder`` (its SQLite, WAL and shared-memory files)."""
    return sum(p.stat().st_size for p in cache_files(folder) if p.is_file())


def cache_entries(folder: str | Path) -> list[tuple[str, str, int, float, float]]:
    """(codec name, task-model name, units, first, last) of the cache in ``folder`` (``first`` / ``last``: when
    the oldest and newest were stored, Unix seconds); empty when there is no cache file."""
    folder = Path(folder)
    if not (folder / CACHE_FILE).is_file():
        return []
    with _opened(folder) as store:
        return store.counts()


def prune_cache(folder: str | Path, older_than_days: float | None = None, codec: str | None = None,
                everything: bool = False) -> int:
    """Remove cached units: those stored more than ``older_than_days`` days ago and / or of codec name ``codec``
    (both: those of both), or with ``everything`` the cache files themselves (a damaged file too); how many
    units were removed (0 for a damaged file). Run it while no run uses the cache."""
    folder = Path(folder)
    if everything:
        try:
            count = sum(n for _, _, n, _, _ in cache_entries(folder))
        except CacheError:
            count = 0  # damaged: removed all the same
        for path in cache_files(folder):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise CacheError(f"cannot remove {path}: {exc.strerror or exc}") from exc
        return count
    if older_than_days is None and codec is None:
        raise CacheError("vcm cache prune: give --older-than DAYS, --codec NAME or --all")
    if not (folder / CACHE_FILE).is_file():
        return 0
    with _opened(folder) as store:
        removed = store.delete(codec=codec, older_than_days=older_than_days)
        if removed:
            store.compact()
    return removed


def _run_names(run: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(codec label -> registered codec name, task label -> task-model name) of the run folder ``run``, from its
    ``config.yaml``; empty (labels kept) when it has none or it no longer validates, with a warning."""
    from vcm_plugin.config import ConfigError
    from vcm_plugin.results.tables import run_config

    try:
        config = run_config(run)
    except (ConfigError, StoreError) as exc:
        log.warning("%s; its units are cached under their config labels", exc)
        return {}, {}
    return ({label: config.codec_params(label)[0] for label in config.codecs},
            {label: config.task_params(label)[0] for label in config.tasks})


def import_run(folder: str | Path, run: str | Path) -> tuple[int, int]:
    """Seed the cache in ``folder`` with the finished units of the run folder ``run`` (its results store: the same
    keys), filed under the registered codec and task-model names; (units imported, units the cache already held).

    Every finished row of the run's store is imported, those of its earlier configurations too; failed rows are
    not; the run's rows are left as they are. :class:`~vcm_plugin.results.store.StoreError` names a run folder that
    is not one or whose store is damaged or of another schema; :class:`CacheError` names the cache file."""
    from vcm_plugin.results.tables import STORE_NAME, run_config

    folder, run = Path(folder), Path(run)
    if not (run / STORE_NAME).is_file():
        run_config(run)  # raises the error naming the folder and what it lacks
    codecs, tasks = _run_names(run)
    with ResultsStore(run / STORE_NAME) as source:
        finished = source.finished_keys()
        if not finished:
            return 0, 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            cache = ResultsStore(folder / CACHE_FILE, timeout=BUSY_TIMEOUT_S)
        except (OSError, StoreError) as exc:
            raise _error(folder, exc) from exc
        with cache:
            try:
                held = {row.key for row in cache.rows(finished, with_predictions=False) if row.status == "ok"}
            except StoreError as exc:
                raise _error(folder, exc) from exc
            imported = 0
            for row in source.rows(finished - held):  # a damaged run store: its own StoreError
                try:
                    cache.put(replace(row, codec=codecs.get(row.codec, row.codec), task=tasks.get(row.task, row.task)))
                except StoreError as exc:
                    raise _error(folder, exc) from exc
                imported += 1
    return imported, len(held)


__all__ = ["BUSY_TIMEOUT_S", "CACHE_ENV", "CACHE_FILE", "CacheError", "UnitCache", "cache_entries", "cache_files",
           "cache_size", "default_cache_dir", "import_run", "prune_cache", "resolve_cache_dir"]
