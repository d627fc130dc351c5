"""The results store: one SQLite file per output folder, one row per finished unit.

A unit is one (codec configuration, quality, scale, image) scored by one task model.
Its key is the SHA-256 of a canonical JSON of everything that determines the row
(codec name, parameters and version, quality, scale, task-model identity including
the weights hash, dataset identity, image id), so changing any of them never reuses
a stale row. Each row is committed on its own (WAL journal), so a kill -9 loses at
most the unit in flight. Only one process (the run's parent) writes.

The evaluation harness (:mod:`vcm_plugin.pipeline`) writes the store and the report
writers (:mod:`vcm_plugin.reports`) read it, so it lives below both;
:mod:`vcm_plugin.pipeline.store` re-exports it for compatibility.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcm_plugin.errors import VcmError
from vcm_plugin.hashing import json_sha256

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
    pixels INTEGER,
    psnr_y REAL,
    psnr_rgb REAL,
    ms_ssim REAL,
    encode_s REAL,
    decode_s REAL,
    inference_s REAL,
    predictions BLOB,             -- zlib-compressed JSON of the task predictions
    error TEXT,
    created REAL NOT NULL DEFAULT (julianday('now'))
);
CREATE INDEX IF NOT EXISTS units_point ON units (codec, quality, scale, task);
"""


class StoreError(VcmError, RuntimeError):
    """The results store cannot be opened or written (names the file)."""


def unit_key(identity: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of a unit's identity."""
    return json_sha256(identity)


@dataclass(frozen=True)
class UnitRow:
    """One stored unit (bits and pixels of the ORIGINAL image, seconds, dB)."""

    key: str
    codec: str
    quality: float | None
    scale: float
    task: str
    image_id: str
    status: str
    bits: int | None = None
    pixels: int | None = None
    psnr_y: float | None = None
    psnr_rgb: float | None = None
    ms_ssim: float | None = None
    encode_s: float | None = None
    decode_s: float | None = None
    inference_s: float | None = None
    predictions: dict[str, Any] | None = None
    error: str | None = None


_COLUMNS = ("key", "codec", "quality", "scale", "task", "image_id", "status", "bits", "pixels", "psnr_y",
            "psnr_rgb", "ms_ssim", "encode_s", "decode_s", "inference_s", "predictions", "error")


class ResultsStore:
    """SQLite results of a run folder; open with :meth:`open` (or as a context manager)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(units)")}
            if "ms_ssim" not in columns:  # stores written before MS-SSIM was recorded
                self._db.execute("ALTER TABLE units ADD COLUMN ms_ssim REAL")
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.path}: results store schema {row[0]}, this version reads {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results store {self.path}: {exc}") from exc

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- writing ----------------------------------------------------------------------
    def put(self, row: UnitRow) -> None:
        """Insert or replace one unit, committed at once."""
        values = [getattr(row, c) for c in _COLUMNS]
        if row.predictions is not None:
            values[_COLUMNS.index("predictions")] = zlib.compress(
                json.dumps(row.predictions, separators=(",", ":")).encode("utf-8"), 6)
        try:
            self._db.execute(f"INSERT OR REPLACE INTO units ({','.join(_COLUMNS)}) "
                             f"VALUES ({','.join('?' * len(_COLUMNS))})", values)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to results store {self.path}: {exc}") from exc

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
    def _record(values: tuple) -> dict[str, Any]:
        record = dict(zip(_COLUMNS, values))
        if record["predictions"] is not None:
            record["predictions"] = json.loads(zlib.decompress(record["predictions"]))
        return record

    def finished_keys(self) -> set[str]:
        """Keys of units that finished successfully (failed ones are retried on a rerun)."""
        with self._reading():
            return {k for (k,) in self._db.execute("SELECT key FROM units WHERE status='ok'")}

    def rows(self, keys: set[str] | None = None, with_predictions: bool = True) -> Iterator[UnitRow]:
        """Stored rows (restricted to ``keys`` when given), in key order."""
        cols = _COLUMNS if with_predictions else tuple(c if c != "predictions" else "NULL" for c in _COLUMNS)
        with self._reading():
            for values in self._db.execute(f"SELECT {','.join(cols)} FROM units ORDER BY key"):
                if keys is not None and values[0] not in keys:
                    continue
                yield UnitRow(**self._record(values))

    def get(self, key: str) -> UnitRow | None:
        with self._reading():
            values = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM units WHERE key=?", (key,)).fetchone()
            return None if values is None else UnitRow(**self._record(values))

    def count(self) -> int:
        with self._reading():
            return int(self._db.execute("SELECT COUNT(*) FROM units").fetchone()[0])
