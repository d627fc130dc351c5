"""Killing `vcm run --jobs N` (SIGKILL, SIGTERM, a worker killed): no orphan workers, no stale lock, resumable.

The first run is a real ``vcm`` subprocess; its worker processes are recorded from /proc
(every process whose parent is the run) BEFORE it is killed, then checked to be gone.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import yaml
from conftest import BitDepthCodec

from vcm_plugin import register_codec
from vcm_plugin.config import config_from_dict
from vcm_plugin.pipeline.run import LOCK_NAME, OutputLock, RunError, run

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")

IMAGES, QUALITIES = 4, [10, 30, 50, 70, 90]
TOTAL = IMAGES * (len(QUALITIES) + 1)  # one task; the uncompressed reference point too


@register_codec
@dataclass
class DieOnPortraitCodec(BitDepthCodec):
    """Test codec: raw 8-bit samples, but its process is SIGKILLed on portrait images (an OOM kill)."""

    name: ClassVar[str] = "test-die-portrait"

    def before_encode(self, image: np.ndarray) -> None:
        if image.shape[0] > image.shape[1]:
            os.kill(os.getpid(), signal.SIGKILL)


def _config(shared: Path, output: Path, **extra) -> dict:
    config = {
        "name": "kill", "output": str(output), "jobs": 2,
        "dataset": {"name": "sample", "max_images": IMAGES},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
        "weights": {"search_path": [str(shared / "weights")]},
        "codecs": {"jpeg": {"qualities": QUALITIES}},
        "anchors": ["jpeg"],
    }
    config.update(extra)
    return config


def _table(folder: Path) -> list[dict[str, str]]:
    """results.csv without the timing columns."""
    with open(folder / "results.csv") as fh:
        return [{k: v for k, v in row.items() if not k.endswith("_s_per_image")} for row in csv.DictReader(fh)]


def _stored(folder: Path) -> dict[str, tuple]:
    with sqlite3.connect(folder / "results.sqlite") as db:
        return {k: (s, e) for k, s, e in db.execute("SELECT key, status, error FROM units")}


@pytest.fixture(scope="module")
def clean(shared: Path, tmp_path_factory) -> Path:
    """An uninterrupted run of the same grid (in this process, one job)."""
    out = tmp_path_factory.mktemp("clean")
    summary = run(config_from_dict(_config(shared, out, jobs=1)), quiet=True)
    assert summary.units_failed == 0 and summary.units_computed == TOTAL
    return out


# -- processes, from /proc -------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited (its reaper may be slow)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pid and stat[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "(gone)"


def _survivors(pids: list[int], within_s: float = 5.0) -> dict[int, str]:
    deadline = time.time() + within_s
    while True:
        alive = {p: _cmdline(p) for p in pids if _alive(p)}
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.1)


def _start(config: dict, tmp_path: Path, *options: str) -> tuple[subprocess.Popen, list[str]]:
    """The run in a new session; its stderr goes to ``tmp_path/stderr.txt`` (a pipe would stay open in orphans)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "vcm_plugin", "run", str(path), *options]
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen([*command, "--quiet"], start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=stderr)
    return proc, command


def _stderr(tmp_path: Path) -> str:
    return (tmp_path / "stderr.txt").read_text()


def _wait_for_rows(proc: subprocess.Popen, store: Path, rows: int, workers: int = 2,
                   timeout: float = 300) -> list[int]:
    """Wait until ``rows`` units are stored and ``workers`` worker processes run; their pids."""
    deadline = time.time() + timeout
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(store, timeout=5) as db:
                done = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        except sqlite3.Error:
            continue
        children = _children(proc.pid)
        if done >= rows and len(children) >= workers:
            return children
    stderr = (store.parent.parent / "stderr.txt").read_text()
    raise AssertionError(f"the run did not reach {rows} stored units with {workers} workers "
                         f"(rows {done}, exit {proc.poll()}): {stderr[-2000:]}")


def _cleanup(proc: subprocess.Popen) -> None:
    """Leftovers of a failed test: the whole session of the first run."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(30)


def _cache_hits(stdout: str) -> int:
    match = re.search(r"(\d+) cache hits of (\d+)", stdout)
    assert match, stdout[-2000:]
    assert int(match.group(2)) == TOTAL
    return int(match.group(1))


# -- the tests ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_of_the_run_leaves_no_worker_and_the_rerun_resumes(shared: Path, tmp_path: Path,
                                                                   clean: Path) -> None:
    out = tmp_path / "out"
    proc, command = _start(_config(shared, out), tmp_path)
    try:
        workers = _wait_for_rows(proc, out / "results.sqlite", 6)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert not _survivors(workers), "worker processes outlived the killed run"
    finally:
        _cleanup(proc)
    kept = sum(s == "ok" for s, _ in _stored(out).values())
    assert 6 <= kept < TOTAL
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]  # not refused: the lock died with the run
    assert _cache_hits(rerun.stdout) == kept
    assert _table(out) == _table(clean)


@pytest.mark.slow
def test_sigterm_stops_the_run_with_a_message_and_no_orphan(shared: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, _ = _start(_config(shared, out), tmp_path)
    try:
        workers = _wait_for_rows(proc, out / "results.sqlite", 4)
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(60)
        stderr = _stderr(tmp_path)
        assert code == 128 + signal.SIGTERM, (code, stderr[-2000:])
        assert "vcm: interrupted by SIGTERM; finished units are stored, rerun the same command to resume" in stderr
        assert "Traceback" not in stderr, stderr[-2000:]
        assert not _survivors(workers), "worker processes outlived the terminated run"
    finally:
        _cleanup(proc)
    with OutputLock(out):  # free at once
        pass


@pytest.mark.slow
def test_a_killed_worker_costs_at_most_its_unit_and_the_run_goes_on(shared: Path, tmp_path: Path,
                                                                   clean: Path) -> None:
    out = tmp_path / "out"
    proc, command = _start(_config(shared, out), tmp_path, "--allow-failures")
    try:
        workers = _wait_for_rows(proc, out / "results.sqlite", 6)
        os.kill(workers[0], signal.SIGKILL)  # as the OOM killer would
        code = proc.wait(600)
        stderr = _stderr(tmp_path)
    finally:
        _cleanup(proc)
    assert code == 0, stderr[-2000:]
    assert "BrokenProcessPool" not in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert "a worker process died" in stderr
    stored = _stored(out)
    failed = {k: e for k, (s, e) in stored.items() if s != "ok"}
    assert len(stored) == TOTAL and len(failed) <= 1, failed  # at most the unit in flight on that worker
    assert all("worker process died" in e and "codec 'jpeg'" in e for e in failed.values())
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _cache_hits(rerun.stdout) == TOTAL - len(failed)  # a failed unit is computed again
    assert all(s == "ok" for s, _ in _stored(out).values())
    assert _table(out) == _table(clean)


def test_a_unit_whose_worker_always_dies_fails_alone(shared: Path, tmp_path: Path) -> None:
    """Retried once in a fresh pool, then a failed row naming codec, quality and image; the rest is computed."""
    data = _config(shared, tmp_path / "out", codecs={"die": {"codec": "test-die-portrait", "qualities": [8]}},
                   anchors=[])
    summary = run(config_from_dict(data), quiet=True)
    stored = {k: v for k, v in _stored(tmp_path / "out").items()}
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as db:
        rows = db.execute("SELECT codec, image_id, status, error FROM units").fetchall()
    failed = [(c, i, e) for c, i, s, e in rows if s == "failed"]
    assert len(stored) == 2 * IMAGES and summary.units_failed == len(failed)
    assert failed and all(c == "die" for c, _, _ in failed)  # the portrait images only
    assert all(f"codec 'die' at quality 8, image id {i}" in e and "worker process died" in e for _, i, e in failed)
    assert sum(s == "ok" and c == "die" for c, _, s, _ in rows) >= 1  # the landscape images were coded
    assert sum(s == "ok" and c == "uncompressed" for c, _, s, _ in rows) == IMAGES


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stale_lock_file_naming_a_dead_pid_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(f"pid {_dead_pid()}")
    with OutputLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() == f"pid {os.getpid()}"


def test_the_lock_is_not_inherited_by_forked_children(tmp_path: Path) -> None:
    """A run whose forked child outlives it (an orphan worker) must not leave the folder locked."""
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from vcm_plugin.pipeline.run import OutputLock
        lock = OutputLock(Path({str(tmp_path)!r})).__enter__()
        child = os.fork()
        if child == 0:  # the orphan: it keeps every inherited descriptor but the output pipes
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            time.sleep(120)
            os._exit(0)
        print(child, flush=True)
        os._exit(0)  # the holder dies without unlocking
    """)
    holder = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    orphan = int(holder.stdout.strip())
    try:
        assert _alive(orphan)
        with OutputLock(tmp_path):
            pass
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_a_live_holder_is_named_and_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    probe = textwrap.dedent(f"""
        from pathlib import Path
        from vcm_plugin.pipeline.run import OutputLock, RunError
        try:
            with OutputLock(Path({str(tmp_path)!r})):
                print("locked")
        except RunError as exc:
            print(exc)
    """)
    with OutputLock(tmp_path):
        with pytest.raises(RunError, match=f"in use by another vcm run \\(pid {os.getpid()}"):
            OutputLock(tmp_path).__enter__()
        # the refused attempt did not drop this process's lock: another process is still refused, naming us
        other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        assert f"in use by another vcm run (pid {os.getpid()})" in other.stdout, other.stdout + other.stderr
    other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "locked", other.stdout + other.stderr
