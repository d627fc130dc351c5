"""The shared unit cache (``cache:`` / $VCM_CACHE, :mod:`vcm_plugin.results.cache`): units computed by one run
are reused by a run in another folder; a bad cache (damaged, read-only, full, busy) never stops a run."""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from conftest import ROOT, BitDepthCodec

from vcm_plugin import register_codec
from vcm_plugin.cli.main import main
from vcm_plugin.config import CACHE_AUTO, config_from_dict, dump_config, load_config
from vcm_plugin.pipeline.run import run
from vcm_plugin.results.cache import CACHE_FILE, UnitCache, cache_entries, resolve_cache_dir
from vcm_plugin.results.manifest import config_sha256
from vcm_plugin.results.store import ResultsStore, UnitRow

TIMING = {"encode_s_per_image", "decode_s_per_image", "inference_s_per_image"}
UNITS_A = 2 * 3  # 2 images x (reference + jpeg at 2 qualities) x 1 task
UNITS_EXTRA = 2 * 2  # 2 images x the extra codec at 2 qualities


@register_codec
@dataclass
class CacheExtraCodec(BitDepthCodec):
    """Test codec: the new codec evaluated against the cached anchors."""

    name: ClassVar[str] = "test-cache-extra"


def make_config(shared: Path, output: Path, cache: Path | str | None, extra: bool = False, **more) -> dict:
    """Config A: 2 sample images, YOLOv5n at 256, JPEG at 2 qualities; ``extra``: plus the test codec (config B)."""
    config = {
        "name": "cache-test", "output": str(output), "cache": None if cache is None else str(cache), "jobs": 1,
        "dataset": {"name": "sample", "max_images": 2},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt", "img_size": 256}},
        "weights": {"search_path": [str(shared / "weights")]},
        "codecs": {"jpeg": {"qualities": [20, 50]}},
        "anchors": ["jpeg"],
    }
    if extra:
        config["codecs"]["new"] = {"codec": "test-cache-extra", "qualities": [4, 6]}
    config.update(more)
    return config


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def ok_units(folder: Path) -> int:
    with ResultsStore(folder / "results.sqlite") as store:
        return len(store.finished_keys())


@pytest.fixture(scope="module")
def runs(shared: Path, tmp_path_factory):
    """Config A into folder a, then B (A plus one codec) into folder b with the same cache; B without a cache."""
    tmp = tmp_path_factory.mktemp("unit-cache")
    cache = tmp / "cache"
    a = run(config_from_dict(make_config(shared, tmp / "a", cache)), quiet=True)
    b = run(config_from_dict(make_config(shared, tmp / "b", cache, extra=True)), quiet=True)
    plain = run(config_from_dict(make_config(shared, tmp / "plain", None, extra=True)), quiet=True)
    return tmp, cache, a, b, plain


# -- where the cache is -----------------------------------------------------------------------------
def test_the_cache_folder_comes_from_the_config_then_vcm_cache_then_the_user_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VCM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == resolve_cache_dir(CACHE_AUTO) == tmp_path / "xdg" / "vcm-plugin" / "units"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "vcm-plugin" / "units"
    monkeypatch.setenv("VCM_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(str(tmp_path / "config")) == tmp_path / "config"  # the config's path wins
    assert resolve_cache_dir(None) is None  # cache: null
    for off in ("off", "OFF", "none", ""):
        monkeypatch.setenv("VCM_CACHE", off)
        assert resolve_cache_dir() is None


def test_the_config_key_is_a_path_relative_to_the_config_file_auto_or_null(tmp_path: Path) -> None:
    base = {"dataset": {"name": "sample"}, "tasks": {"detection": {"model": "yolov5"}},
            "codecs": {"jpeg": {"qualities": [50]}}}
    path = tmp_path / "configs" / "run.yaml"
    path.parent.mkdir()
    for value, expected in (("my-cache", str(tmp_path / "configs" / "my-cache")), (None, None), (False, None)):
        path.write_text(yaml.safe_dump({**base, "cache": value}))
        assert load_config(path, check_plugins=False).cache == expected
    path.write_text(yaml.safe_dump(base))
    config = load_config(path, check_plugins=False)
    assert config.cache == CACHE_AUTO
    assert load_config(path, ["cache=elsewhere"], check_plugins=False).cache == "elsewhere"  # cwd-relative
    # where the cache is does not change what was run
    assert config_sha256(config) == config_sha256(config.model_copy(update={"cache": None}))


# -- reuse ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_new_codec_against_cached_anchors_computes_only_its_own_units(runs) -> None:
    tmp, cache, a, b, plain = runs
    assert (a.units_computed, a.units_from_cache, a.units_failed) == (UNITS_A, 0, 0)
    assert (b.units_total, b.units_from_cache, b.units_cached, b.units_computed, b.units_failed) == (
        UNITS_A + UNITS_EXTRA, UNITS_A, UNITS_A, UNITS_EXTRA, 0)
    assert (plain.units_computed, plain.units_from_cache) == (UNITS_A + UNITS_EXTRA, 0)
    assert read_csv(tmp / "b" / "results.csv") == read_csv(tmp / "plain" / "results.csv")
    assert (tmp / "b" / "bd_rate.csv").read_text() == (tmp / "plain" / "bd_rate.csv").read_text()
    assert ok_units(tmp / "b") == UNITS_A + UNITS_EXTRA  # copied into the run's own store
    # the cache names registered codecs and task models, not config labels
    assert [(codec, task, n) for codec, task, n, _, _ in cache_entries(cache)] == [
        ("jpeg", "yolov5", 4), ("test-cache-extra", "yolov5", 4), ("uncompressed", "yolov5", 2)]


@pytest.mark.slow
def test_cached_units_keep_every_stored_column_under_the_runs_own_labels(runs, shared: Path) -> None:
    tmp, cache, *_ = runs
    config = make_config(shared, tmp / "relabelled", cache)
    config["codecs"] = {"anchor": {"codec": "jpeg", "qualities": [20, 50]}}
    config["anchors"] = ["anchor"]
    summary = run(config_from_dict(config), quiet=True)
    assert (summary.units_from_cache, summary.units_computed) == (UNITS_A, 0)
    with ResultsStore(tmp / "a" / "results.sqlite") as first:
        original = {r.key: r for r in first.rows()}
    with ResultsStore(tmp / "relabelled" / "results.sqlite") as copy:
        copied = list(copy.rows())
    assert sorted(r.codec for r in copied) == ["anchor"] * 4 + ["uncompressed"] * 2
    for row in copied:  # bits, times, predictions, hashes, metrics: as computed by the first run
        source = original[row.key]
        assert row == UnitRow(**{**source.__dict__, "codec": row.codec})
    again = run(config_from_dict(config), quiet=True)  # the run's own store first
    assert (again.units_cached, again.units_from_cache, again.units_computed) == (UNITS_A, 0, 0)


@pytest.mark.slow
def test_a_cached_unit_whose_kept_objects_are_missing_is_computed(runs, shared: Path) -> None:
    tmp, cache, *_ = runs
    out = tmp / "kept"
    summary = run(config_from_dict(make_config(shared, out, cache, keep=["bitstreams"])), quiet=True)
    assert (summary.units_from_cache, summary.units_computed) == (2, 4)  # only the reference has no object
    assert len(list((out / "objects" / "bitstreams").rglob("*.vcmb"))) == 4


@pytest.mark.slow
def test_the_manifest_and_the_log_say_how_many_units_came_from_the_cache(runs, shared: Path) -> None:
    tmp, cache, *_ = runs
    units = json.loads((tmp / "b" / "manifest.json").read_text())["units"]
    assert units == {"total": UNITS_A + UNITS_EXTRA, "in_store": 0, "from_cache": UNITS_A, "computed": UNITS_EXTRA,
                     "failed": 0, "cache": str(cache / CACHE_FILE)}
    assert json.loads((tmp / "plain" / "manifest.json").read_text())["units"]["cache"] is None
    lines: list[str] = []
    summary = run(config_from_dict(make_config(shared, tmp / "logged", cache)), log=lines.append)
    assert (summary.units_from_cache, summary.units_computed) == (UNITS_A, 0)
    assert f"0 units computed (0 failed), {UNITS_A} cache hits of {UNITS_A} ({UNITS_A} from the shared cache " \
           f"{cache / CACHE_FILE})" in lines[-1]


@pytest.mark.slow
def test_a_dask_run_reads_and_writes_the_cache_in_its_client(runs, shared: Path) -> None:
    """The client copies the cached units and caches the units its workers computed."""
    tmp, cache, *_ = runs
    copy = tmp / "dask-cache"
    shutil.copytree(cache, copy)
    config = make_config(shared, tmp / "dask", copy, codecs={"jpeg": {"qualities": [20, 50, 80]}},
                         executor={"kind": "dask", "cluster": "local", "workers": 1})
    summary = run(config_from_dict(config), quiet=True)
    assert (summary.units_from_cache, summary.units_computed, summary.units_failed) == (UNITS_A, 2, 0)
    assert [(c, n) for c, _, n, _, _ in cache_entries(copy)] == [
        ("jpeg", 6), ("test-cache-extra", 4), ("uncompressed", 2)]
    again = run(config_from_dict({**config, "output": str(tmp / "dask-again")}), quiet=True)
    assert (again.units_from_cache, again.units_computed) == (UNITS_A + 2, 0)
    assert read_csv(tmp / "dask" / "results.csv") == read_csv(tmp / "dask-again" / "results.csv")


@pytest.mark.slow
def test_vcm_cache_import_seeds_the_cache_from_a_run_made_without_it(runs, shared: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    tmp, cache, *_ = runs
    seeded = tmp_path / "seeded"
    assert main(["cache", "import", str(tmp / "plain"), "--cache", str(seeded)]) == 0
    out = capsys.readouterr().out
    assert f"imported {UNITS_A + UNITS_EXTRA} unit(s) from {tmp / 'plain' / 'results.sqlite'} into " \
           f"{seeded / CACHE_FILE}" in out
    # the same keys and names as the run that cached them as it went (labels `jpeg`, `new` -> codec names)
    assert [(c, t, n) for c, t, n, _, _ in cache_entries(seeded)] == [
        (c, t, n) for c, t, n, _, _ in cache_entries(cache)]
    with ResultsStore(seeded / CACHE_FILE) as imported, ResultsStore(cache / CACHE_FILE) as computed:
        assert imported.finished_keys() == computed.finished_keys()
    assert main(["cache", "import", str(tmp / "plain"), "--cache", str(seeded)]) == 0
    assert f"imported 0 unit(s) from {tmp / 'plain' / 'results.sqlite'}" in capsys.readouterr().out
    summary = run(config_from_dict(make_config(shared, tmp_path / "reused", seeded, extra=True)), quiet=True)
    assert (summary.units_from_cache, summary.units_computed) == (UNITS_A + UNITS_EXTRA, 0)
    assert read_csv(tmp_path / "reused" / "results.csv") == read_csv(tmp / "plain" / "results.csv")


def _run_folder(folder: Path, rows: list[UnitRow], config: bool = True) -> Path:
    """A run folder holding ``rows`` (and, with ``config``, a config.yaml with labels `anchor` and `det`)."""
    folder.mkdir(parents=True)
    with ResultsStore(folder / "results.sqlite") as store:
        for row in rows:
            store.put(row)
    if config:
        (folder / "config.yaml").write_text(dump_config(config_from_dict({
            "dataset": {"name": "sample"}, "tasks": {"det": {"model": "yolov5"}},
            "codecs": {"anchor": {"codec": "jpeg", "qualities": [20]}}})))
    return folder


def _unit(key: str, status: str = "ok", codec: str = "anchor") -> UnitRow:
    return UnitRow(key=key, codec=codec, quality=20, scale=1.0, task="det", image_id="1", status=status, bits=100,
                   predictions={"boxes": [[1, 2, 3, 4]]}, error=None if status == "ok" else "boom")


def test_vcm_cache_import_files_units_under_codec_names_and_skips_failed_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    run_dir = _run_folder(tmp_path / "run", [_unit("a"), _unit("b", "failed"), _unit("c", codec="uncompressed")])
    cache = tmp_path / "cache"
    assert main(["cache", "import", str(run_dir), "--cache", str(cache)]) == 0
    assert "imported 2 unit(s)" in capsys.readouterr().out
    assert [(c, t, n) for c, t, n, _, _ in cache_entries(cache)] == [("jpeg", "yolov5", 1),
                                                                    ("uncompressed", "yolov5", 1)]
    with ResultsStore(cache / CACHE_FILE) as store:
        assert store.get("a") == replace(_unit("a"), codec="jpeg", task="yolov5")  # every column as stored
        assert store.get("b") is None
    # without a config.yaml: the labels, with a warning naming the folder
    bare = _run_folder(tmp_path / "bare", [_unit("d")], config=False)
    assert main(["cache", "import", str(bare), "--cache", str(cache)]) == 0
    assert "imported 1 unit(s)" in capsys.readouterr().out
    assert any(str(bare) in r.getMessage() and "config labels" in r.getMessage() for r in caplog.records)
    assert ("anchor", "det", 1) in [(c, t, n) for c, t, n, _, _ in cache_entries(cache)]


def test_vcm_cache_import_with_the_cache_off_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = _run_folder(tmp_path / "run", [_unit("a")])  # VCM_CACHE=off (conftest): nowhere to import to
    assert main(["cache", "import", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "cache is off" in err and "--cache PATH" in err


@pytest.mark.slow
def test_vcm_cache_list_and_prune(runs, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, cache, *_ = runs
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    assert main(["cache", "list", "--cache", str(copy)]) == 0
    out = capsys.readouterr().out
    assert str(copy / CACHE_FILE) in out and "10 unit(s)" in out
    assert all(name in out for name in ("jpeg", "test-cache-extra", "uncompressed", "yolov5"))
    assert main(["cache", "prune", "--cache", str(copy), "--codec", "test-cache-extra"]) == 0
    assert "removed 4 unit(s)" in capsys.readouterr().out
    assert main(["cache", "prune", "--cache", str(copy), "--older-than", "1"]) == 0  # all younger than a day
    assert "removed 0 unit(s)" in capsys.readouterr().out
    assert [c for c, *_ in cache_entries(copy)] == ["jpeg", "uncompressed"]
    assert main(["cache", "prune", "--cache", str(copy)]) == 2  # says what to give
    assert "--older-than DAYS, --codec NAME or --all" in capsys.readouterr().err
    assert main(["cache", "prune", "--cache", str(copy), "--all"]) == 0
    assert "removed 6 unit(s)" in capsys.readouterr().out
    assert not list(copy.iterdir())
    (copy / CACHE_FILE).write_bytes(b"garbage" * 100)
    assert main(["cache", "list", "--cache", str(copy)]) == 2
    err = capsys.readouterr().err
    assert str(copy / CACHE_FILE) in err and "damaged" in err and "prune --all" in err
    assert main(["cache", "prune", "--cache", str(copy), "--all"]) == 0 and not (copy / CACHE_FILE).exists()


# -- a bad cache never stops a run (the catalogue, tests/test_bad_inputs.py, has every case; here: real
# -- permissions and separate processes) ---------------------------------------------------------------
_RUN_SCRIPT = """
import json, logging, sys
from vcm_plugin.config import config_from_dict
from vcm_plugin.pipeline.run import run
logging.basicConfig(level=logging.WARNING)
summary = run(config_from_dict(json.loads(sys.argv[1])), quiet=True)
print(json.dumps({"computed": summary.units_computed, "from_cache": summary.units_from_cache,
                  "failed": summary.units_failed}))
"""


def _without_root_file_access() -> None:
    """In a child of a root process, before exec: drop the capabilities that let root write read-only files
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the bounding set, so permissions apply to the command as to a user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(99)


def _run_in_subprocess(config: dict, as_user: bool = False) -> subprocess.Popen:
    """``run(config)`` in a new Python; ``as_user``: without root's right to write read-only files."""
    drop = _without_root_file_access if as_user and os.geteuid() == 0 else None
    return subprocess.Popen([sys.executable, "-c", _RUN_SCRIPT, json.dumps(config)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=drop)


@pytest.mark.slow
def test_a_read_only_cache_folder_is_named_and_skipped(shared: Path, tmp_path: Path) -> None:
    """A cache folder the run may not write (chmod; the run gives up root's right to write anyway)."""
    cache = tmp_path / "cache"
    run(config_from_dict(make_config(shared, tmp_path / "first", cache)), quiet=True)  # a cache with config A
    try:
        for path in (*cache.iterdir(), cache):
            path.chmod(0o555 if path.is_dir() else 0o444)
        # a new cache inside it cannot be made
        proc = _run_in_subprocess(make_config(shared, tmp_path / "out", cache / "new"), as_user=True)
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        assert json.loads(stdout.splitlines()[-1]) == {"computed": UNITS_A, "from_cache": 0, "failed": 0}
        assert str(cache / "new" / CACHE_FILE) in stderr and "not writable" in stderr, stderr
        assert "goes on without the cache" in stderr
        assert ok_units(tmp_path / "out") == UNITS_A
        # the existing read-only cache: its units are read or recomputed, and one more quality is computed
        config = make_config(shared, tmp_path / "more", cache, codecs={"jpeg": {"qualities": [20, 50, 80]}})
        proc = _run_in_subprocess(config, as_user=True)
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        result = json.loads(stdout.splitlines()[-1])
        assert result["computed"] + result["from_cache"] == UNITS_A + 2 and result["failed"] == 0
        assert stderr.count(str(cache / CACHE_FILE)) == 1 and "goes on without the cache" in stderr, stderr
        assert ok_units(tmp_path / "more") == UNITS_A + 2
    finally:
        cache.chmod(0o755)


@pytest.mark.slow
def test_two_runs_sharing_the_cache_at_once(shared: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    procs = [_run_in_subprocess(make_config(shared, tmp_path / name, cache)) for name in ("one", "two")]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        assert "shared unit cache" not in stderr, stderr
        result = json.loads(stdout.splitlines()[-1])
        assert result["computed"] + result["from_cache"] == UNITS_A and result["failed"] == 0
    assert read_csv(tmp_path / "one" / "results.csv") == read_csv(tmp_path / "two" / "results.csv")
    assert sum(n for *_, n, _, _ in cache_entries(cache)) == UNITS_A


def _writer(cache: str, index: int, barrier, results) -> None:
    """A process adding 100 units of its own and 100 shared ones to a new cache, one at a time, then reading."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("vcm_plugin.results.cache").addHandler(handler)
    barrier.wait()
    with UnitCache(cache) as shared_cache:
        added = sum(shared_cache.add([UnitRow(key=f"{prefix}-{i}", codec="jpeg", quality=i, scale=1.0, task="t",
                                              image_id=str(i), status="ok", bits=i, predictions={"n": i})])
                    for i in range(100) for prefix in (f"own{index}", "common"))
        read = sum(1 for _ in shared_cache.rows({f"own{index}-{i}" for i in range(100)}))
    results.put((index, added, read, records))


def test_concurrent_writers_share_one_new_cache(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    writers = [context.Process(target=_writer, args=(str(tmp_path / "cache"), i, barrier, results)) for i in range(4)]
    for writer in writers:
        writer.start()
    outcomes = sorted(results.get(timeout=120) for _ in writers)
    for writer in writers:
        writer.join(60)
    assert [(i, added, read, records) for i, added, read, records in outcomes] == [
        (i, 200, 100, []) for i in range(4)]
    assert cache_entries(tmp_path / "cache")[0][2] == 4 * 100 + 100


def test_failed_units_are_never_cached_and_a_missing_cache_is_not_created(tmp_path: Path) -> None:
    cache = UnitCache(tmp_path / "cache")
    assert list(cache.rows({"k"})) == [] and not (tmp_path / "cache").exists()  # reading creates nothing
    failed = UnitRow(key="k", codec="jpeg", quality=1, scale=1.0, task="t", image_id="1", status="failed",
                     error="boom")
    assert cache.add([failed]) == 0 and not (tmp_path / "cache").exists()
    off = UnitCache(None)
    assert not off.enabled and off.add([failed]) == 0 and list(off.rows({"k"})) == []
