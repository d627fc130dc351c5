"""The results store: one SQLite file per output folder, one row per finished unit.

A unit is one (codec configuration, quality, scale, image) scored by one task model.
Its key is the SHA-256 of a canonical JSON of everything that determines the row
(codec name, parameters and version, quality, scale, task-model identity including
the weights hash, dataset identity, image id), so changing any of them never reuses
a stale row. Each row is committed on its own (WAL journal), so a kill -9 loses at
most the unit in flight. Only one process (the run's parent) writes a run's store; the
shared unit cache (:mod:`vcm_plugin.results.cache`) is a store of the same format that
several runs open at once.

Per-image metrics have one REAL column each, named by
:data:`~vcm_plugin.images.metrics.IMAGE_METRICS` (added to older stores on opening; rows stored
before a metric was registered have it empty). Columns added after the first schema
(:data:`_ADDED_COLUMNS`, e.g. ``front_s``) are added the same way, in place (``ALTER TABLE ... ADD
COLUMN``, the schema version unchanged): a store or shared unit cache written by an older version
opens, keeps every row and key, and reads them back with the new columns ``None``; an older version
still reads and writes a migrated file (it names its columns). The ``grid`` table lists the units of the
latest run (point labels, image id, key), so readers find that run's rows among older ones.

The evaluation harness (:mod:`vcm_plugin.pipeline`) writes the store and the report
writers (:mod:`vcm_plugin.reports`) read it (through :func:`vcm_plugin.results.load`), so it lives
below both.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcm_plugin.errors import VcmError
from vcm_plugin.hashing import json_sha256
from vcm_plugin.images.metrics import IMAGE_METRICS

SCHEMA_VERSION = 1

REFERENCE = "uncompressed"  # codec label of the reference point: the original image, no codec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY,
    codec TEXT NOT NULL,          -- the codec entry's label in the config
    quality REAL,
    scale REAL NOT NULL,
    task TEXT NOT NULL,           -- the task entry's label in the config
    image_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    bits INTEGER,
    side_info_bits INTEGER,       -- out-of-band side information, not in bits (fcm-vvc mode: ctc)
    estimated_bits REAL,          -- a learned codec's likelihood estimate of the size, NOT the rate
    bitstream_sha256 TEXT,        -- SHA-256 of the coded stream (the bytes counted in bits)
    decoded_sha256 TEXT,          -- SHA-256 of the decoded image's bytes or cut tensors (pipeline.objects)
    pixels INTEGER,
    encode_s REAL,                -- the codec's whole encode, front_s included
    decode_s REAL,
    inference_s REAL,
    predictions BLOB,             -- zlib-compressed JSON of the task predictions
    error TEXT,
    created REAL NOT NULL DEFAULT (julianday('now'))
);
CREATE INDEX IF NOT EXISTS units_point ON units (codec, quality, scale, task);
CREATE TABLE IF NOT EXISTS grid (codec TEXT NOT NULL, quality REAL, scale REAL NOT NULL, task TEXT NOT NULL,
                                 image_id TEXT NOT NULL, key TEXT NOT NULL);
"""


class StoreError(VcmError, RuntimeError):
    """The results store cannot be opened or written (names the file)."""


def unit_key(identity: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of a unit's identity."""
    return json_sha256(identity)


@dataclass(frozen=True)
class UnitRow:
    """One stored unit: bits and pixels of the ORIGINAL image, seconds, the per-image ``metrics`` by name;
    ``side_info_bits``: what the codec's mode sent out of band, not in ``bits`` (0 for a self-contained stream);
    ``estimated_bits``: a learned codec's likelihood estimate of the size (NOT the rate; None for other codecs);
    ``bitstream_sha256`` / ``decoded_sha256``: hex SHA-256 of the coded stream and of the decoded output
    (:mod:`vcm_plugin.pipeline.objects`; None for the reference and for rows stored before they were recorded).
    ``encode_s`` is the codec's whole ``encode`` (the same for every codec and every row, old or new);
    ``front_s`` the part of it spent in the task model's front, image -> cut point, by a codec coding a cut
    point's value (:attr:`~vcm_plugin.codecs.base.Bitstream.front_s`: ``fcm-vvc``, ``feature-learned``); None
    where no front ran (image codecs, ``direct``, the reference) and in rows stored before it was recorded.

    ``metrics`` holds the defined values only; ``row.psnr_y`` (any registered metric name) reads
    ``metrics`` and is None where undefined.
    """

    key: str
    codec: str
    quality: float | None
    scale: float
    task: str
    image_id: str
    status: str
    bits: int | None = None
    pixels: int | None = None
    side_info_bits: int | None = None
    estimated_bits: float | None = None
    bitstream_sha256: str | None = None
    decoded_sha256: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    encode_s: float | None = None
    decode_s: float | None = None
    inference_s: float | None = None
    predictions: dict[str, Any] | None = None
    error: str | None = None
    front_s: float | None = None

    def __getattr__(self, name: str) -> float | None:
        if name in IMAGE_METRICS:
            return self.metrics.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


_COLUMNS = ("key", "codec", "quality", "scale", "task", "image_id", "status", "bits", "pixels", "encode_s",
            "decode_s", "inference_s", "predictions", "error", "side_info_bits", "estimated_bits", "bitstream_sha256",
            "decoded_sha256", "front_s")
#: columns added after the first schema: created in older stores on opening (empty in their rows), without a new
#: schema version, so that stores and the shared unit cache (whose file name carries the version) stay in use
_ADDED_COLUMNS = {"side_info_bits": "INTEGER", "estimated_bits": "REAL", "bitstream_sha256": "TEXT",
                  "decoded_sha256": "TEXT", "front_s": "REAL"}


_KEYS_PER_QUERY = 500  # keys per SELECT ... WHERE key IN (...) (SQLite allows 32766 parameters)


class ResultsStore(contextlib.AbstractContextManager):
    """SQLite results of a run folder; a context manager that closes it."""

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        """Open (creating) the store at ``path``; ``timeout``: seconds to wait while another connection writes.

        Several processes may open one file at once (the shared unit cache, :mod:`vcm_plugin.results.cache`):
        columns and the schema row are added under SQLite's write lock, after looking again.
        """
        self.path = Path(path)
        deadline, pause = time.monotonic() + timeout, 0.05
        while True:
            try:
                self._open(timeout)
                return
            except StoreError as exc:
                # SQLite answers "locked" at once, without its busy wait, to some races of processes opening one
                # new file together (switching it to WAL, creating its tables): try again within ``timeout``
                if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 1.0)

    def _open(self, timeout: float) -> None:
        db = None
        try:
            db = self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            schema, missing = self._layout()
            if schema is None or missing:
                self._db.execute("BEGIN IMMEDIATE")  # another process opening the file now waits, then finds it done
                try:
                    schema, missing = self._layout()
                    if schema is None or schema == str(SCHEMA_VERSION):
                        for name, kind in missing:  # a metric or column newer than the store
                            self._db.execute(f"ALTER TABLE units ADD COLUMN {name} {kind}")
                    if schema is None:
                        self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                        schema = str(SCHEMA_VERSION)
                    self._db.execute("COMMIT")
                finally:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
            self._columns = _COLUMNS + tuple(IMAGE_METRICS)
            if schema != str(SCHEMA_VERSION):
                raise StoreError(f"{self.path}: results store schema {schema}, this version reads {SCHEMA_VERSION}")
        except (sqlite3.Error, StoreError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open results store {self.path}: {exc}") from exc

    def _layout(self) -> tuple[str | None, list[tuple[str, str]]]:
        """The stored schema version (None in a new file) and the (column, type) pairs the units table lacks."""
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(units)")}
        missing = [(name, "REAL") for name in IMAGE_METRICS if name not in columns]
        missing += [(name, kind) for name, kind in _ADDED_COLUMNS.items() if name not in columns]
        return (None if row is None else str(row[0])), missing

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- writing ----------------------------------------------------------------------
    def put(self, row: UnitRow) -> None:
        """Insert or replace one unit, committed at once."""
        values = [getattr(row, c) for c in self._columns]
        if row.predictions is not None:
            values[_COLUMNS.index("predictions")] = zlib.compress(
                json.dumps(row.predictions, separators=(",", ":")).encode("utf-8"), 6)
        try:
            self._db.execute(f"INSERT OR REPLACE INTO units ({','.join(self._columns)}) "
                             f"VALUES ({','.join('?' * len(self._columns))})", values)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to results store {self.path}: {exc}") from exc

    def set_grid(self, units: list[tuple[str, float | None, float, str, str, str]]) -> None:
        """Record the units of the current run: (codec label, quality, scale, task, image id, key) each."""
        try:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM grid")
            self._db.executemany("INSERT INTO grid VALUES (?, ?, ?, ?, ?, ?)", units)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreError(f"cannot write to results store {self.path}: {exc}") from exc

    def grid(self) -> list[tuple[str, float | None, float, str, str, str]]:
        """The units of the latest run (as given to :meth:`set_grid`), in that order."""
        with self._reading():
            return [tuple(r) for r in self._db.execute("SELECT * FROM grid ORDER BY rowid")]

    # -- reading ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Turn a damaged file (SQLite error, undecodable predictions) into a StoreError naming it."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read results store {self.path}: {exc} (the file is damaged; move it away "
                             "to recompute its units)") from exc
        except (zlib.error, ValueError) as exc:
            raise StoreError(f"cannot read results store {self.path}: a row's predictions are damaged ({exc}); "
                             "move the file away to recompute its units") from exc

    @staticmethod
    def _row(values: tuple) -> UnitRow:
        record = dict(zip(_COLUMNS, values))
        if record["predictions"] is not None:
            record["predictions"] = json.loads(zlib.decompress(record["predictions"]))
        metrics = {k: v for k, v in zip(IMAGE_METRICS, values[len(_COLUMNS):]) if v is not None}
        return UnitRow(**record, metrics=metrics)

    def finished_keys(self) -> set[str]:
        """Keys of units that finished successfully (failed ones are retried on a rerun)."""
        with self._reading():
            return {k for (k,) in self._db.execute("SELECT key FROM units WHERE status='ok'")}

    def rows(self, keys: set[str] | None = None, with_predictions: bool = True) -> Iterator[UnitRow]:
        """Stored rows (restricted to ``keys`` when given), in key order."""
        cols = self._columns if with_predictions else [c if c != "predictions" else "NULL" for c in self._columns]
        select = f"SELECT {','.join(cols)} FROM units"
        with self._reading():
            if keys is None:
                yield from map(self._row, self._db.execute(f"{select} ORDER BY key"))
                return
            ordered = sorted(keys)  # looked up by key, a chunk at a time: a large store is not scanned
            for start in range(0, len(ordered), _KEYS_PER_QUERY):
                chunk = ordered[start:start + _KEYS_PER_QUERY]
                yield from map(self._row, self._db.execute(
                    f"{select} WHERE key IN ({','.join('?' * len(chunk))}) ORDER BY key", chunk))

    def get(self, key: str) -> UnitRow | None:
        with self._reading():
            values = self._db.execute(f"SELECT {','.join(self._columns)} FROM units WHERE key=?", (key,)).fetchone()
            return None if values is None else self._row(values)

    def count(self) -> int:
        with self._reading():
            return int(self._db.execute("SELECT COUNT(*) FROM units").fetchone()[0])

    def counts(self) -> list[tuple[str, str, int, float, float]]:
        """(codec, task, units, first, last) per codec and task column; ``first`` / ``last``: when the oldest and
        newest of those rows were stored, in Unix seconds."""
        with self._reading():
            return [tuple(r) for r in self._db.execute(
                "SELECT codec, task, COUNT(*), (MIN(created) - 2440587.5) * 86400, (MAX(created) - 2440587.5) * 86400 "
                "FROM units GROUP BY codec, task ORDER BY codec, task")]

    # -- removing ---------------------------------------------------------------------
    def delete(self, codec: str | None = None, older_than_days: float | None = None) -> int:
        """Delete the rows whose ``codec`` column is ``codec`` and / or stored more than ``older_than_days`` days
        ago (every row when neither is given), committed at once; how many."""
        where, args = [], []
        if codec is not None:
            where.append("codec = ?")
            args.append(codec)
        if older_than_days is not None:
            where.append("created < julianday('now') - ?")
            args.append(older_than_days)
        try:
            return self._db.execute("DELETE FROM units" + (" WHERE " + " AND ".join(where) if where else ""),
                                    args).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to results store {self.path}: {exc}") from exc

    def compact(self) -> None:
        """Give the space of deleted rows back to the file system (``VACUUM``; waits for other writers)."""
        try:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot compact results store {self.path}: {exc}") from exc
