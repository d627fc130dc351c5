"""The task model's front (image -> cut point) that a split codec runs inside its encode is timed apart:
``Bitstream.front_s`` (never in the stream, a ``.vcmb`` file or a unit key), the results store's ``front_s``
column (added in place to older stores and shared unit caches, whose rows read back with it ``None``)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from conftest import BitDepthCodec

from vcm_plugin.codecs.base import Bitstream, front_timer
from vcm_plugin.results.store import SCHEMA_VERSION, ResultsStore, UnitRow

IMAGE = np.random.default_rng(7).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@dataclass
class _TimedFront(BitDepthCodec):
    """Test codec: a 20 ms "front" under :func:`front_timer`, then the bit-depth coding."""

    name: ClassVar[str] = "test-timed-front"

    def before_encode(self, image: np.ndarray) -> None:
        with front_timer():
            time.sleep(0.02)


@dataclass
class _Wrapper(BitDepthCodec):
    """Test codec: codes with another codec's encode inside its own."""

    name: ClassVar[str] = "test-wrapper"

    def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
        inner = _TimedFront().encode(image, quality)
        return self.make_bitstream(inner.data, quality, image)


@dataclass
class _Plain(BitDepthCodec):
    name: ClassVar[str] = "test-plain"


def test_the_front_inside_an_encode_is_timed_apart_and_never_in_the_stream() -> None:
    start = time.perf_counter()
    timed = _TimedFront().encode(IMAGE, 6)
    whole = time.perf_counter() - start
    assert 0.02 <= timed.front_s <= whole
    plain = _Plain().encode(IMAGE, 6)
    assert plain.front_s is None  # no front ran: an image codec's stream
    assert _Wrapper().encode(IMAGE, 6).front_s >= 0.02  # an inner codec's front is the outer encode's too
    # a measurement, not data: the bytes, the rate, equality and the .vcmb file do not see it
    untimed = replace(timed, front_s=None)
    assert timed == untimed and timed.num_bits == untimed.num_bits and timed.to_bytes() == untimed.to_bytes()
    assert Bitstream.from_bytes(timed.to_bytes()).front_s is None
    with front_timer():  # outside an encode: nothing to report to, nothing recorded
        pass
    assert _Plain().encode(IMAGE, 6).front_s is None


def test_a_codec_that_times_its_front_itself_keeps_its_value() -> None:
    @dataclass
    class Own(BitDepthCodec):
        name: ClassVar[str] = "test-own-front"

        def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
            with front_timer():
                pass
            return self.make_bitstream(image.tobytes(), quality, image, front_s=1.5)

    assert Own().encode(IMAGE, 6).front_s == 1.5


def test_fcm_vvc_reports_the_task_models_front_with_its_stream() -> None:
    from vcm_plugin import get_codec

    codec = get_codec("fcm-vvc", task_model="cifar10-vgg", cut="block2", preset="faster")
    if not codec.is_available():
        pytest.skip(f"fcm-vvc is not available here: {codec.is_available().reason}")
    codec.encode(IMAGE, 42)  # loads the model
    start = time.perf_counter()
    bitstream = codec.encode(IMAGE, 42)
    assert 0 < bitstream.front_s < time.perf_counter() - start
    codec.model().front("block2", IMAGE)  # outside an encode: still works, times nothing


# -- the harness: one unit of a split codec and of an image codec ------------------------------------------------
def test_a_split_codec_unit_stores_its_front_time_and_an_image_codec_unit_none(tmp_path: Path) -> None:
    """``encode_s`` stays the codec's whole encode (comparable with rows stored before); ``front_s`` is its part
    spent in the task model's front."""
    from vcm_plugin import get_codec
    from vcm_plugin.datasets.base import Sample
    from vcm_plugin.images.io import write_image
    from vcm_plugin.pipeline.units import CodecPoint, Job, TaskSpec, freeze_params, init_worker, run_job

    fcm = {"task_model": "cifar10-vgg", "cut": "block2", "preset": "faster"}
    if not get_codec("fcm-vvc", **fcm).is_available():
        pytest.skip("fcm-vvc (libvvenc through ffmpeg) is not available here")
    write_image(tmp_path / "x.png", IMAGE)
    sample = Sample("x", tmp_path / "x.png", 32, 32)
    init_worker([TaskSpec("cls", "cifar10-vgg", ())])
    points = {"fcm": CodecPoint("fcm", "fcm-vvc", freeze_params(fcm), 42),
              "jpeg": CodecPoint("jpeg", "jpeg", (), 50),
              "ref": CodecPoint("uncompressed", None, (), None)}
    rows = {label: run_job(Job(point, sample, (("cls", f"key-{label}"),)))[0] for label, point in points.items()}
    assert all(r.status == "ok" for r in rows.values()), [r.error for r in rows.values()]
    split = rows["fcm"]
    assert split.front_s is not None and 0 < split.front_s < split.encode_s
    assert rows["jpeg"].front_s is None and rows["jpeg"].encode_s > 0
    assert rows["ref"].front_s is None
    with ResultsStore(tmp_path / "results.sqlite") as store:
        for row in rows.values():
            store.put(row)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        assert store.get("key-fcm") == split and store.get("key-fcm").front_s == split.front_s
        assert store.get("key-jpeg").front_s is None


# -- stores and caches written before the column existed -------------------------------------------------------
def _row(key: str, front_s: float | None = None) -> UnitRow:
    return UnitRow(key=key, codec="fcm", quality=42, scale=1.0, task="det", image_id=key, status="ok", bits=800,
                   pixels=1024, encode_s=0.5, decode_s=0.1, inference_s=0.2, front_s=front_s,
                   predictions={"kind": "detections", "boxes": [], "scores": [], "labels": []},
                   bitstream_sha256="ab" * 32, decoded_sha256="cd" * 32)


def _old_store(path: Path, keys: list[str]) -> None:
    """A store as the version before ``front_s`` wrote it: today's layout without that column."""
    with ResultsStore(path) as store:
        for key in keys:
            store.put(_row(key))
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE units DROP COLUMN front_s")
    db.commit()
    db.close()
    assert "front_s" not in _columns(path)


def _columns(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[1] for r in db.execute("PRAGMA table_info(units)")}
    finally:
        db.close()


def test_an_older_store_opens_migrates_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    _old_store(path, ["a", "b"])
    with ResultsStore(path) as store:  # opening adds the column; the schema version and the rows stay
        assert "front_s" in _columns(path)
        assert store.finished_keys() == {"a", "b"}
        assert store.get("a") == _row("a") and store.get("a").front_s is None
        store.put(_row("c", front_s=0.125))
    db = sqlite3.connect(path)  # a writer of the older version (it names its columns) still works on the file
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (str(SCHEMA_VERSION),)
    db.execute("INSERT INTO units (key, codec, quality, scale, task, image_id, status, encode_s) "
               "VALUES ('d', 'fcm', 42, 1.0, 'det', 'd', 'ok', 0.5)")
    db.commit()
    db.close()
    with ResultsStore(path) as store:
        assert {r.key: r.front_s for r in store.rows()} == {"a": None, "b": None, "c": 0.125, "d": None}


def test_an_older_shared_cache_is_used_and_its_copies_keep_front_s(tmp_path: Path) -> None:
    """The cache file of an older version (same name: the schema version did not change) is read, written and
    copied from; a cached unit copied into a run's store keeps its ``front_s``."""
    from vcm_plugin.datasets.base import Sample
    from vcm_plugin.pipeline.run import _copy_from_cache
    from vcm_plugin.pipeline.units import CodecPoint, Job
    from vcm_plugin.results.cache import CACHE_FILE, UnitCache

    folder = tmp_path / "cache"
    folder.mkdir()
    _old_store(folder / CACHE_FILE, ["old"])
    with UnitCache(folder) as cache:
        assert [r.key for r in cache.rows({"old"})] == ["old"] and cache.enabled
        assert cache.add([_row("new", front_s=0.25)]) == 1
        point = CodecPoint("my-fcm", "fcm-vvc", (), 42)
        jobs = [Job(point, Sample(key, tmp_path / f"{key}.png", 32, 32), (("my-det", key),)) for key in ("old", "new")]
        with ResultsStore(tmp_path / "run.sqlite") as store:
            todo, copied = _copy_from_cache(cache, store, jobs, tmp_path, [])
            assert (todo, copied) == ([], 2)
            got = {r.key: r for r in store.rows()}
    assert got["new"].front_s == 0.25 and got["old"].front_s is None
    assert got["new"] == replace(_row("new", front_s=0.25), codec="my-fcm", task="my-det")
    assert cache.enabled


def test_vcm_cache_import_carries_front_s_into_an_older_cache(tmp_path: Path) -> None:
    from vcm_plugin.results.cache import CACHE_FILE, import_run

    folder = tmp_path / "cache"
    folder.mkdir()
    _old_store(folder / CACHE_FILE, ["old"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with ResultsStore(run_dir / "results.sqlite") as store:  # no config.yaml: imported under its labels
        store.put(_row("imported", front_s=0.5))
    assert import_run(folder, run_dir) == (1, 0)
    with ResultsStore(folder / CACHE_FILE) as cache:
        assert cache.get("imported") == _row("imported", front_s=0.5) and cache.get("old").front_s is None
