"""Executors: Dask gives the local executor's numbers, survives a killed worker; hung units time out."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from conftest import BitDepthCodec

from vcm_plugin import register_codec
from vcm_plugin.config import ConfigError, config_from_dict
from vcm_plugin.pipeline.executors import shards
from vcm_plugin.pipeline.run import run


@register_codec
@dataclass
class HangOnPortraitCodec(BitDepthCodec):
    """Test codec: raw 8-bit samples, but hangs (sleeps an hour) on portrait images."""

    name: ClassVar[str] = "test-hang-portrait"

    def before_encode(self, image: np.ndarray) -> None:
        if image.shape[0] > image.shape[1]:
            time.sleep(3600)


def _config(shared: Path, output: Path, **extra) -> dict:
    config = {
        "name": "exec", "output": str(output), "jobs": 2,
        "dataset": {"name": "sample", "max_images": 4},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
        "weights": {"search_path": [str(shared / "weights")]},
        "codecs": {"jpeg": {"qualities": [10, 30, 50, 90]}},
        "anchors": ["jpeg"],
    }
    config.update(extra)
    return config


def _units(folder: Path) -> dict[str, tuple]:
    with sqlite3.connect(folder / "results.sqlite") as db:
        return {k: (s, b, p) for k, s, b, p in db.execute("SELECT key, status, bits, predictions FROM units")}


def _table(folder: Path) -> list[dict]:
    """results.csv without the timing columns."""
    import csv

    with open(folder / "results.csv") as fh:
        return [{k: v for k, v in r.items() if not k.endswith("_s_per_image")} for r in csv.DictReader(fh)]


EIGHT_QUALITIES = {"jpeg": {"qualities": [10, 20, 30, 40, 50, 60, 70, 90]}}


@pytest.fixture(scope="module")
def clean_eight(shared: Path, tmp_path_factory) -> Path:
    """An uninterrupted local run of the grid the kill tests interrupt."""
    out = tmp_path_factory.mktemp("clean")
    summary = run(config_from_dict(_config(shared, out, codecs=EIGHT_QUALITIES)), quiet=True)
    assert summary.units_failed == 0
    return out


def test_executor_config_shorthand_and_errors(shared: Path, tmp_path: Path) -> None:
    config = config_from_dict(_config(shared, tmp_path, executor="dask"))
    assert config.executor.kind == "dask" and config.executor.cluster == "local"
    with pytest.raises(ConfigError, match="executor"):
        config_from_dict(_config(shared, tmp_path, executor={"kind": "dask", "address": "tcp://x:1",
                                                             "cluster": "local"}))
    with pytest.raises(ConfigError, match="executor.clustr"):
        config_from_dict(_config(shared, tmp_path, executor={"clustr": "local"}))


def test_shards_hold_one_codec_point() -> None:
    from vcm_plugin.pipeline.units import CodecPoint, Job

    a, b = CodecPoint("a", "jpeg", (), 10), CodecPoint("a", "jpeg", (), 20)
    jobs = [Job(a, i, ()) for i in range(5)] + [Job(b, i, ()) for i in range(2)]  # type: ignore[arg-type]
    assert [len(s) for s in shards(jobs, 2)] == [2, 2, 1, 2]


@pytest.mark.slow
def test_dask_local_cluster_gives_the_local_numbers(shared: Path, tmp_path: Path) -> None:
    local = run(config_from_dict(_config(shared, tmp_path / "local")), quiet=True)
    dask_run = run(config_from_dict(_config(shared, tmp_path / "dask", executor={
        "kind": "dask", "cluster": "local", "workers": 2, "shard_size": 3})), quiet=True)
    assert local.units_failed == dask_run.units_failed == 0
    assert _units(tmp_path / "local") == _units(tmp_path / "dask")  # same keys, bits and predictions
    # the shards' busy seconds per worker, and the cluster's start (workers load their models then) apart
    assert 0 < dask_run.load.start_s < dask_run.load.wall_s and sum(dask_run.load.busy.values()) > 0
    strip = {"encode_s_per_image", "decode_s_per_image", "inference_s_per_image"}
    import csv

    def table(folder: Path) -> list[dict]:
        with open(folder / "results.csv") as fh:
            return [{k: v for k, v in r.items() if k not in strip} for r in csv.DictReader(fh)]

    assert table(tmp_path / "local") == table(tmp_path / "dask")


def _worker_processes() -> list:
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if "multiprocessing" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing(shared: Path, tmp_path: Path, clean_eight: Path) -> None:
    config = config_from_dict(_config(shared, tmp_path / "out", executor={
        "kind": "dask", "cluster": "local", "workers": 2, "shard_size": 1}, codecs=EIGHT_QUALITIES))
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=run(config, quiet=True)))
    thread.start()
    store = tmp_path / "out" / "results.sqlite"
    deadline = time.time() + 120
    killed = None
    while time.time() < deadline and killed is None:
        time.sleep(0.5)
        try:
            with sqlite3.connect(store) as db:
                done = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        except sqlite3.Error:
            continue
        workers = _worker_processes()
        if done >= 6 and workers:
            killed = workers[0].pid
            os.kill(killed, signal.SIGKILL)  # a real SIGKILL of a worker process
    thread.join(300)
    assert killed is not None, "no worker process was found to kill"
    summary = result["summary"]
    assert summary.units_failed == 0 and summary.units_total == 4 * 9
    units = _units(tmp_path / "out")
    assert len(units) == 4 * 9 and all(s == "ok" for s, _, _ in units.values())
    assert units == _units(clean_eight)  # same keys, bits and predictions as the uninterrupted run
    assert _table(tmp_path / "out") == _table(clean_eight)


def test_a_hung_codec_is_timed_out_and_the_run_goes_on(shared: Path, tmp_path: Path) -> None:
    data = _config(shared, tmp_path / "out", jobs=1, executor={"task_timeout": 3},
                   codecs={"hang": {"codec": "test-hang-portrait", "qualities": [8]}}, anchors=[])
    start = time.perf_counter()
    summary = run(config_from_dict(data), quiet=True)
    assert time.perf_counter() - start < 60
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as db:
        failed = db.execute("SELECT image_id, error FROM units WHERE status='failed'").fetchall()
        ok = db.execute("SELECT COUNT(*) FROM units WHERE status='ok' AND codec='hang'").fetchone()[0]
    assert failed and summary.units_failed == len(failed)
    assert all("timed out after 3 s" in e and image_id in e for image_id, e in failed)
    assert ok >= 1  # the landscape images were coded


@pytest.mark.slow
def test_a_killed_dask_client_resumes_on_rerun(shared: Path, tmp_path: Path, clean_eight: Path) -> None:
    import subprocess
    import sys

    import yaml

    data = _config(shared, tmp_path / "out", executor={"kind": "dask", "cluster": "local", "workers": 2,
                                                       "shard_size": 1},
                   codecs=EIGHT_QUALITIES)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    command = [sys.executable, "-m", "vcm_plugin", "run", str(path), "--quiet"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = tmp_path / "out" / "results.sqlite"
    done = 0
    try:
        deadline = time.time() + 120
        while time.time() < deadline and done < 8:
            time.sleep(0.5)
            try:
                with sqlite3.connect(store) as db:
                    done = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
            except sqlite3.Error:
                pass
        os.kill(proc.pid, signal.SIGKILL)  # the client only; its workers lose their scheduler
        proc.wait(30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftover worker processes of the killed client
        except ProcessLookupError:
            pass
    assert 8 <= done < 4 * 9, f"the client was killed after {done} rows"
    summary = run(config_from_dict(data), quiet=True)
    assert summary.units_cached >= done and summary.units_failed == 0
    assert summary.units_cached + summary.units_computed == 4 * 9
    assert _units(tmp_path / "out") == _units(clean_eight)  # same keys, bits and predictions
    assert _table(tmp_path / "out") == _table(clean_eight)


def test_the_slurm_example_builds_its_batch_script() -> None:
    pytest.importorskip("dask_jobqueue")
    from vcm_plugin.config import load_config
    from vcm_plugin.pipeline.executors import ExecutorError, jobqueue_cluster

    config = load_config(Path(__file__).resolve().parents[1] / "eval_configs" / "coco_shared_slurm.yaml")
    cluster = jobqueue_cluster(config.executor)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p cpu" in script and "#SBATCH -A my-project" in script and "--exclusive=user" in script
    bad = config.executor.model_copy(update={"cluster_options": {"no_such_option": 1}})
    with pytest.raises(ExecutorError, match="cluster_options for slurm"):
        jobqueue_cluster(bad)


def test_executor_dask_with_an_address_override(shared: Path, tmp_path: Path) -> None:
    from vcm_plugin.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "eval_configs" / "quickstart.yaml",
                         ["executor=dask", "executor.address=tcp://scheduler:8786"])
    assert config.executor.kind == "dask" and config.executor.address == "tcp://scheduler:8786"
    with pytest.raises(ConfigError, match="need `kind: dask`"):
        config_from_dict(_config(shared, tmp_path, executor={"kind": "local", "cluster": "slurm"}))
