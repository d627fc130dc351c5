"""``--jobs N``: one thread per codec in the workers (keys and streams unchanged), the costliest units first,
per-worker busy seconds, and the bad worker counts."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from conftest import BitDepthCodec

from vcm_plugin import Bitstream, register_codec
from vcm_plugin.codecs.base import BUILTIN_HINTS
from vcm_plugin.codecs.registry import codec_names, get_codec, get_codec_class
from vcm_plugin.config import config_from_dict
from vcm_plugin.datasets.base import Sample
from vcm_plugin.pipeline import compare as _image_files  # noqa: F401 - registers the image-files dataset
from vcm_plugin.pipeline import run as run_module
from vcm_plugin.pipeline.executors import largest_first, shards, worker_name
from vcm_plugin.pipeline.run import RunError, run, worker_count
from vcm_plugin.pipeline.units import CodecPoint, Job, expected_cost, worker_params

THREADS_LOG = "VCM_TEST_THREADS_LOG"


@register_codec
@dataclass
class ThreadsProbeCodec(BitDepthCodec):
    """Test codec: writes ``pid threads`` to $VCM_TEST_THREADS_LOG on every encode; its stream ignores ``threads``."""

    name: ClassVar[str] = "test-threads-probe"
    one_thread: ClassVar[dict[str, Any]] = {"threads": 1}

    threads: int = 0

    def before_encode(self, image: np.ndarray) -> None:
        with open(os.environ[THREADS_LOG], "a") as fh:
            fh.write(f"{os.getpid()} {self.threads}\n")


def _probe_config(kodak: Path, output: Path, jobs: int, **codec: Any) -> dict:
    images = [str(kodak / f"kodim{i:02d}.png") for i in (1, 2, 3, 4)]
    return {"name": "jobs", "output": str(output), "jobs": jobs, "cache": None,
            "dataset": {"name": "image-files", "paths": images}, "tasks": {"image-quality": {}},
            "codecs": {"probe": {"codec": "test-threads-probe", "qualities": [2, 5], **codec}}}


def _keys_and_streams(folder: Path) -> dict[str, tuple]:
    with sqlite3.connect(folder / "results.sqlite") as db:
        return {k: (b, s, d) for k, b, s, d in
                db.execute("SELECT key, bits, bitstream_sha256, decoded_sha256 FROM units")}


def _threads_seen(log: Path) -> dict[int, set[int]]:
    seen: dict[int, set[int]] = {}
    for line in log.read_text().split("\n"):
        if line:
            pid, threads = map(int, line.split())
            seen.setdefault(pid, set()).add(threads)
    return seen


@pytest.mark.parametrize("explicit", [None, 3])
def test_workers_run_codecs_on_one_thread_with_the_same_keys(shared: Path, tmp_path: Path, monkeypatch,
                                                               explicit: int | None) -> None:
    """jobs 2: the workers' codec has threads 1 (an explicit ``threads:`` wins); keys, bits and hashes are those
    of jobs 1, which keeps the codec's default; the manifest says what the workers added."""
    codec = {} if explicit is None else {"threads": explicit}
    seen = {}
    for jobs in (1, 2):
        log = tmp_path / f"threads-{jobs}.log"
        monkeypatch.setenv(THREADS_LOG, str(log))
        summary = run(config_from_dict(_probe_config(shared / "data" / "kodak", tmp_path / f"j{jobs}", jobs, **codec)),
                      quiet=True)
        assert summary.units_failed == 0 and summary.units_computed == 2 * 4 + 4
        seen[jobs] = _threads_seen(log)
    assert set().union(*seen[1].values()) == {0 if explicit is None else explicit}
    assert os.getpid() in seen[1]  # in-process
    assert set().union(*seen[2].values()) == {1 if explicit is None else explicit}
    assert os.getpid() not in seen[2]  # in the workers
    assert _keys_and_streams(tmp_path / "j1") == _keys_and_streams(tmp_path / "j2")
    manifest = json.loads((tmp_path / "j2" / "manifest.json").read_text())
    assert manifest["threads"]["workers"] == 2
    assert manifest["threads"].get("worker_codec_params", {}) == ({"probe": {"threads": 1}} if explicit is None else {})
    assert "worker_codec_params" not in json.loads((tmp_path / "j1" / "manifest.json").read_text())["threads"]


def test_one_thread_parameters_are_machine_parameters() -> None:
    """What a worker adds never reaches a stream's parameters (nor, through the point's own, a unit key)."""
    for name in codec_names():
        cls = get_codec_class(name)
        fields = set(getattr(cls, "__dataclass_fields__", {}))
        assert set(cls.one_thread_params()) <= cls.machine_params & fields, name
    assert set(BUILTIN_HINTS) <= set(codec_names())
    assert get_codec_class("vvc").cost_per_pixel() > get_codec_class("jpeg").cost_per_pixel() == 1.0
    assert ThreadsProbeCodec.cost_per_pixel() == 10.0  # a plug-in without hints
    point = CodecPoint("v", "vvc", (("preset", "faster"),), 37)
    assert worker_params(point, False) == {"preset": "faster"}
    assert worker_params(point, True) == {"preset": "faster", "threads": 1}
    assert worker_params(CodecPoint("v", "vvc", (("threads", 4),), 37), True) == {"threads": 4}
    assert worker_params(CodecPoint("a", "av1", (), 37), True) == {}  # libaom codes other bits on one thread


@pytest.mark.parametrize("name,quality", [("vvc", 37), ("hevc", 32), ("jxl", 1.0)])
def test_one_thread_keeps_the_streams(name: str, quality: float, kodim23: np.ndarray) -> None:
    """A codec's one-thread parameters give the bytes and pictures of its default threads (checked at two sizes)."""
    cls = get_codec_class(name)
    assert cls.one_thread_params()
    default, single = get_codec(name), get_codec(name, **cls.one_thread_params())
    if not default.is_available():
        pytest.skip(f"{name}: {default.is_available().reason}")
    for h, w in ((96, 128), (512, 768)):
        picture = np.ascontiguousarray(kodim23[:h, :w])
        a, b = default.encode(picture, quality), single.encode(picture, quality)
        assert a.data == b.data and a.params == b.params
        assert np.array_equal(default.decode(a), single.decode(b))


def _job(codec: str | None, quality: Any, size: tuple[int, int], scale: float = 1.0, tasks: int = 1) -> Job:
    point = CodecPoint(codec or "uncompressed", codec, (), quality, scale)
    sample = Sample(f"{codec}-{quality}-{size}-{scale}", Path("x.png"), *size)
    return Job(point, sample, tuple((f"t{i}", "k") for i in range(tasks)))


def test_the_costliest_units_go_first() -> None:
    jpeg, vvc_low, vvc_high = _job("jpeg", 50, (480, 640)), _job("vvc", 47, (480, 640)), _job("vvc", 27, (480, 640))
    vvc_small, vvc_scaled = _job("vvc", 27, (120, 160)), _job("vvc", 27, (480, 640), scale=0.5)
    reference = _job(None, None, (480, 640))
    ordered = largest_first([jpeg, reference, vvc_small, vvc_low, vvc_scaled, vvc_high])
    assert ordered == [vvc_high, vvc_low, vvc_scaled, vvc_small, jpeg, reference]
    assert expected_cost(_job("vvc", 27, (480, 640), tasks=2)) > expected_cost(vvc_high)
    # Dask: shards keep one codec point; the costliest shard goes out first (execute_dask)
    parts = shards([jpeg, vvc_high, vvc_high], 8)
    assert [len(s) for s in parts] == [1, 2]
    assert max(parts, key=lambda s: sum(map(expected_cost, s))) == [vvc_high, vvc_high]


def test_each_worker_s_busy_seconds_are_counted(shared: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(THREADS_LOG, str(tmp_path / "threads.log"))
    summary = run(config_from_dict(_probe_config(shared / "data" / "kodak", tmp_path / "out", 2)), quiet=True)
    load = summary.load
    assert summary.workers == 2 and len(load.busy) == 2 and all(s > 0 for s in load.busy.values())
    assert load.wall_s > 0 and 0 <= load.idle_share(2) < 1
    one = run(config_from_dict(_probe_config(shared / "data" / "kodak", tmp_path / "one", 1)), quiet=True)
    assert list(one.load.busy) == [worker_name()]


@pytest.mark.parametrize("jobs", [0, -1, True, 1.5])
def test_bad_worker_counts_are_refused(jobs: Any, shared: Path, tmp_path: Path) -> None:
    config = config_from_dict(_probe_config(shared / "data" / "kodak", tmp_path / "out", 1))
    with pytest.raises(RunError, match=r"jobs .*at least 1"):
        worker_count(jobs, config)
    with pytest.raises(RunError, match=r"jobs .*at least 1"):
        run(config, tmp_path / "out", jobs=jobs, quiet=True)
    assert not (tmp_path / "out").exists()


def test_more_workers_than_cores_warns_naming_the_core_count(shared: Path, tmp_path: Path, monkeypatch,
                                                              caplog) -> None:
    monkeypatch.setattr(run_module, "available_cores", lambda: 2)
    config = config_from_dict({**_probe_config(shared / "data" / "kodak", tmp_path / "out", 1), "jobs": None})
    with caplog.at_level(logging.WARNING, logger="vcm_plugin"):
        assert worker_count(2, config) == 2
        assert not caplog.records
        assert worker_count(None, config) == 2  # the default: every core
        assert worker_count(3, config) == 3
    assert "3 worker processes" in caplog.text and "more than the 2 cores" in caplog.text


def test_bitstream_of_a_probe_ignores_threads(kodim23: np.ndarray, monkeypatch) -> None:
    """The probe codec's own promise (what the one-thread test above relies on)."""
    picture = np.ascontiguousarray(kodim23[:32, :32])
    monkeypatch.setenv(THREADS_LOG, os.devnull)
    a: Bitstream = ThreadsProbeCodec().encode(picture, 4)
    b: Bitstream = ThreadsProbeCodec(threads=7).encode(picture, 4)
    assert a.data == b.data and a.params == b.params
