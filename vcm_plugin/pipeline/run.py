"""``vcm run``: the rate-accuracy grid over a dataset, resumable, then the reports.

The grid is (codec configuration x quality x scale) plus the uncompressed reference
point, times every image, times every task model. Units already in the output
folder's results store are skipped, those the shared unit cache holds are copied into
it (:mod:`vcm_plugin.results.cache`); the rest run in-process (``jobs=1``) or in a pool
of worker processes that each load their task models once. Only this (parent)
process writes the store and the cache. A second run on the same output folder is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from tqdm import tqdm

from vcm_plugin._version import __version__
from vcm_plugin.config import RunConfig, dump_config
from vcm_plugin.datasets.base import Dataset
from vcm_plugin.errors import VcmError
from vcm_plugin.pipeline.executors import WorkerLoad, execute
from vcm_plugin.pipeline.units import CodecPoint, Job, TaskSpec, freeze_params, thaw_params, worker_params
from vcm_plugin.results import REFERENCE, Point, PointLabel, ResultsStore, UnitRow, aggregate
from vcm_plugin.results.cache import UnitCache, resolve_cache_dir
from vcm_plugin.results.manifest import build_manifest, write_manifest
from vcm_plugin.results.store import unit_key
from vcm_plugin.results.tables import STORE_NAME, task_name
from vcm_plugin.weights import with_search_path

LOCK_NAME = ".vcm-run.lock"
logger = logging.getLogger(__name__)


class RunError(VcmError, RuntimeError):
    """The run cannot start (output folder unusable or busy, bad dataset, ...)."""


@dataclass
class RunSummary:
    output: Path
    units_total: int = 0
    units_cached: int = 0  # units not computed: found in the folder's store, or copied from the shared cache
    units_from_cache: int = 0  # of those, copied from the shared unit cache (vcm_plugin.results.cache)
    units_computed: int = 0
    units_failed: int = 0
    wall_s: float = 0.0
    reports: dict[str, Path] = field(default_factory=dict)
    workers: int = 1  # worker processes (--jobs), or Dask workers asked for
    load: WorkerLoad = field(default_factory=WorkerLoad)  # each worker's busy seconds, the executor's wall seconds
    setup_s: float = 0.0  # before the first unit: dataset, keys, preflight, store, manifest
    reports_s: float = 0.0  # after the last unit: results.csv, BD-rates, plots


# -- the output folder ------------------------------------------------------------------
class OutputLock:
    """An exclusive lock on an output folder, released when the holding process dies.

    A POSIX record lock (``fcntl.lockf``: ``fcntl(F_SETLK)``) on ``.vcm-run.lock``, not
    ``flock``. An ``flock`` belongs to the open file description, which ``fork`` shares: the
    workers of ``--jobs N`` held it too, and a worker outliving a killed run kept the folder
    locked. A record lock belongs to the PROCESS: fork children never hold it, and the
    kernel drops it when the process dies, so a lock file left by a dead run (its text
    names a dead pid) never blocks a rerun. (The "spawn" / "forkserver" start methods would
    not share the descriptor either, but their workers re-import everything and lose
    codecs and task models registered at run time, so the pool keeps "fork".)

    Record locks do not exclude their own process, and closing ANY descriptor of the file
    drops them, so the locks this process holds are remembered and a second lock on the
    same folder in this process is refused before the file is even opened. A refusal names
    the holder's pid (from the kernel on Linux, else from the file's ``pid N``).
    """

    _held: ClassVar[set[tuple[int, int]]] = set()  # (device, inode) of the lock files this process holds
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fh: Any = None
        self._id: tuple[int, int] | None = None

    def _refuse(self, holder: str) -> RunError:
        return RunError(f"output folder {self.path.parent} is in use by another vcm run ({holder}); "
                        "wait for it to finish or choose another --output")

    def __enter__(self) -> OutputLock:
        with OutputLock._guard:
            try:
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(self.path)
                    if (st.st_dev, st.st_ino) in OutputLock._held:
                        raise self._refuse(f"pid {os.getpid()}, this process")
                self._fh = open(self.path, "a+")
            except OSError as exc:
                raise RunError(f"output folder {self.path.parent} is not writable: {exc.strerror or exc}") from exc
            try:
                fcntl.lockf(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    self._fh.close()
                    raise RunError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
                holder = self._holder()
                self._fh.close()
                self._fh = None
                raise self._refuse(holder) from None
            st = os.fstat(self._fh.fileno())
            self._id = (st.st_dev, st.st_ino)
            OutputLock._held.add(self._id)
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}\n")
        self._fh.flush()
        return self

    def _holder(self) -> str:
        """``pid N`` of the process holding the lock (the kernel's answer on 64-bit Linux, else the file's text)."""
        if sys.platform.startswith("linux") and struct.calcsize("P") == 8:
            query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            try:
                l_type, _, _, _, l_pid = struct.unpack("hhqqi4x", fcntl.fcntl(self._fh, fcntl.F_GETLK, query))
                if l_type != fcntl.F_UNLCK and l_pid > 0:
                    return f"pid {l_pid}"
            except OSError:
                pass
        self._fh.seek(0)
        return self._fh.read().strip() or "another process"

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            with OutputLock._guard:
                fcntl.lockf(self._fh, fcntl.LOCK_UN)
                self._fh.close()
                self._fh = None
                OutputLock._held.discard(self._id)  # type: ignore[arg-type]


def check_output_folder(folder: str | Path) -> Path:
    """Check, creating nothing, that ``folder`` is or can be made a writable folder; errors name it."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise RunError(f"output folder {path} is not writable: it exists and is not a folder")
    ancestor = path.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunError(f"output folder {path} is not writable: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunError(f"output folder {path} is not writable: Permission denied ({ancestor})")
    return path


def create_output_folder(folder: str | Path) -> Path:
    """Create the output folder and check it is writable; errors name it.

    :func:`run` calls it only once the preflight has passed: a run that cannot start
    leaves no folder behind.
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".vcm-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"output folder {path} is not writable: {exc.strerror or exc}") from exc
    return path


# -- building the grid ------------------------------------------------------------------
def codec_points(config: RunConfig) -> list[CodecPoint]:
    """Every codec point of the grid, the reference point first."""
    from vcm_plugin.codecs.registry import get_codec_class

    points = [CodecPoint(REFERENCE, None, (), None, 1.0)]
    for label, entry in config.codecs.items():
        name, params = config.codec_params(label)
        params = with_search_path(get_codec_class(name), params, config.weights.search_path)  # learned codecs
        for scale in entry.scales:
            for quality in entry.qualities:
                q = int(quality) if float(quality).is_integer() else float(quality)
                points.append(CodecPoint(label, name, freeze_params(params), q, scale))
    return points


def task_specs(config: RunConfig) -> list[TaskSpec]:
    """Task entries; the config's weights search path is passed to models that take one."""
    from vcm_plugin.tasks.registry import get_task_model_class

    search_path = config.weights.search_path
    return [TaskSpec(label, name, freeze_params(with_search_path(get_task_model_class(name), params, search_path)))
            for label, (name, params) in ((label, config.task_params(label)) for label in config.tasks)]


def _codec_identity(point: CodecPoint) -> dict[str, Any]:
    if point.is_reference:
        return {"codec": None}
    from vcm_plugin.pipeline.units import codec_for

    codec = codec_for(point, one_thread=False)  # the configured parameters: one_thread never enters a key
    identity = {"codec": point.codec, "params": codec.params(), "version": codec.version()}
    weights = codec.weights_identity(point.quality)  # type: ignore[arg-type]
    if weights is not None:  # a retrained checkpoint at the same path must not reuse old rows
        identity["weights"] = weights
    return identity


def unit_identity(point: CodecPoint, codec_id: dict[str, Any], task_id: dict[str, Any],
                  sample_id: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines one stored row; ``sample_id`` is :meth:`Dataset.unit_identity` of its image.

    Nothing here depends on the other images of the run, so extending a selection reuses rows.
    """
    return {"v": 2, **codec_id, "quality": point.quality, "scale": point.scale, "task": task_id,
            "sample": sample_id}


def build_jobs(config: RunConfig, dataset: Dataset, tasks: list[TaskSpec],
               task_ids: dict[str, dict[str, Any]]) -> tuple[list[Job], dict[tuple, dict[str, str]]]:
    """All jobs of the grid, and the key of every (point, task, image)."""
    samples = list(dataset)
    sample_ids = {str(s.image_id): dataset.unit_identity(s) for s in samples}  # hashes each image file once
    light = {str(s.image_id): replace(s, annotations=[]) for s in samples}  # workers need no annotations
    jobs: list[Job] = []
    keys: dict[tuple, dict[str, str]] = defaultdict(dict)  # (point, task) -> image_id -> key
    for point in codec_points(config):
        codec_id = _codec_identity(point)
        for sample in samples:
            task_keys = []
            sample_id = sample_ids[str(sample.image_id)]
            for spec in tasks:
                key = unit_key(unit_identity(point, codec_id, task_ids[spec.label], sample_id))
                keys[(point, spec.label)][str(sample.image_id)] = key
                task_keys.append((spec.label, key))
            jobs.append(Job(point, light[str(sample.image_id)], tuple(task_keys)))
    return jobs, keys


# -- executing ----------------------------------------------------------------------------
def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(jobs: int | None, config: RunConfig) -> int:
    """The worker processes of a run: ``jobs`` (``--jobs``), else the config's ``jobs``, else every core.

    Fewer than 1 is an error. More than the cores (workers on this machine) is allowed, with a warning naming the
    core count: the workers then share cores, each unit runs slower and its stored seconds grow.
    """
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise RunError(f"jobs {jobs!r}: the number of worker processes must be a whole number, at least 1")
    n_jobs = jobs or config.jobs or available_cores()
    executor, cores = config.executor, available_cores()
    here = n_jobs if executor.kind == "local" else (executor.workers or n_jobs)  # processes on this machine
    if (executor.kind == "local" or (executor.address is None and executor.cluster in (None, "local"))) \
            and here > cores:
        logger.warning("%d worker processes (--jobs, the config's jobs or executor.workers) are more than the %d "
                       "core%s this process can use: they share them, each unit runs slower and its stored seconds "
                       "grow; %d or fewer avoids it", here, cores, "" if cores == 1 else "s", cores)
    return n_jobs


def run(config: RunConfig, output: str | Path | None = None, jobs: int | None = None, quiet: bool = False,
        log: Callable[[str], None] = print) -> RunSummary:
    """Run the whole grid of ``config`` into ``output`` and write the reports.

    Order: the output folder is checked (nothing created); a folder that a previous run
    used (it has the lock file) is locked at once, so a busy folder is refused before
    any work; the dataset is loaded, the grid built, the units already in an existing
    results store or in the shared unit cache skipped and the preflight run on the rest
    (a cached unit needs no codec here). Only then is the folder
    created, locked, ``config.yaml`` written and the store opened for writing: a run that
    cannot start (bad dataset, missing weights or codec) creates nothing.
    """
    from vcm_plugin.datasets.registry import get_dataset
    from vcm_plugin.reports.formats import check_report_formats, write_report_formats
    from vcm_plugin.tasks.registry import get_task_model

    n_jobs = worker_count(jobs, config)
    folder = check_output_folder(output or config.output)
    summary = RunSummary(output=folder, workers=n_jobs)
    started = time.perf_counter()
    with contextlib.ExitStack() as held:
        locked = (folder / LOCK_NAME).exists()
        if locked:  # a folder a run has used: refuse it now if another run holds it
            held.enter_context(OutputLock(folder))
        dataset = get_dataset(config.dataset.name, **config.dataset_params())
        tasks = task_specs(config)
        task_ids = {}
        for spec in tasks:  # identity (incl. the weights hash) without loading the network
            model = get_task_model(spec.model, **thaw_params(spec.params))
            task_ids[spec.label] = {"vcm": __version__.split(".")[0], **model.identity()}
        all_jobs, keys = build_jobs(config, dataset, tasks, task_ids)
        if config.keep:  # workers store the kept outputs in the folder (pipeline.objects)
            all_jobs = [replace(job, keep=tuple(config.keep), folder=str(folder.absolute())) for job in all_jobs]
        finished: set[str] = set()
        if (folder / STORE_NAME).exists():  # a rerun: only the remaining units need to be able to run
            with ResultsStore(folder / STORE_NAME) as store:
                finished = _finished(store, folder, config.keep)
        cache = held.enter_context(UnitCache(resolve_cache_dir(config.cache)))
        pending = _pending(all_jobs, finished)[0]
        preflight(_pending(pending, _cached_keys(cache, pending, folder, config.keep))[0], tasks)  # cached: not run
        check_report_formats(config)  # e.g. a CTTC report the template cannot hold: refused before any work

        create_output_folder(folder)
        if not locked:
            held.enter_context(OutputLock(folder))
        try:
            (folder / "config.yaml").write_text(dump_config(config))
        except OSError as exc:  # e.g. a full disk
            raise RunError(f"cannot write {folder / 'config.yaml'}: {exc.strerror or exc}") from exc
        with ResultsStore(folder / STORE_NAME) as store:
            store.set_grid([(point.label, point.quality, point.scale, task, image_id, key)
                            for (point, task), by_image in keys.items() for image_id, key in by_image.items()])
            todo, cached = _pending(all_jobs, _finished(store, folder, config.keep))  # again, now under the lock
            todo, summary.units_from_cache = _copy_from_cache(cache, store, todo, folder, config.keep)
            manifest = build_manifest(config, {j.point.label: (j.point.codec, thaw_params(j.point.params))
                                               for j in all_jobs if not j.point.is_reference}, task_ids,
                                      n_jobs, _worker_codec_params(all_jobs, config, n_jobs))
            write_manifest(folder, manifest)
            summary.units_total = sum(len(job.task_keys) for job in all_jobs)
            summary.units_cached = cached + summary.units_from_cache
            names = {job.point.label: job.point.codec or REFERENCE for job in all_jobs}  # the cache's codec column
            models = {spec.label: spec.model for spec in tasks}  # and its task column
            remaining = Counter((job.point.label, job.point.quality, job.point.scale) for job in todo)
            known: dict[PointLabel, Point] = {}  # points aggregated for the progress lines, reused by the reports
            bar = tqdm(total=sum(len(j.task_keys) for j in todo), desc="units", unit="unit", disable=quiet)
            summary.setup_s = time.perf_counter() - started
            for rows in execute(todo, tasks, config.executor, n_jobs, summary.load):
                for row in rows:
                    store.put(row)
                    summary.units_computed += 1
                    summary.units_failed += row.status == "failed"
                if cache.enabled:  # after the run's own store, its source of truth
                    cache.add(replace(row, codec=names[row.codec], task=models[row.task]) for row in rows)
                bar.update(len(rows))
                point_key = (rows[0].codec, rows[0].quality, rows[0].scale) if rows else None
                if point_key is not None:
                    remaining[point_key] -= 1
                    if remaining[point_key] == 0 and not quiet:
                        bar.write(_point_line(store, keys, point_key, dataset, config, known))
            bar.close()
            write_manifest(folder, {**manifest, "units": _units_record(summary, cache)})  # where the units came from
            reports_start = time.perf_counter()
            summary.reports = write_report_formats(config, dataset, folder, log=None if quiet else log, known=known)
            summary.reports_s = time.perf_counter() - reports_start
    summary.wall_s = time.perf_counter() - started
    if not quiet:
        log(f"done in {summary.wall_s:.1f} s: {summary.units_computed} units computed "
            f"({summary.units_failed} failed), {summary.units_cached} cache hits of {summary.units_total}"
            f"{'' if cache.path is None else f' ({summary.units_from_cache} from the shared cache {cache.path})'}; "
            f"reports in {folder}")
    return summary


def _worker_codec_params(jobs: list[Job], config: RunConfig, n_jobs: int) -> dict[str, dict[str, Any]]:
    """Label -> the one-thread parameters its codec gets in the workers (``Codec.one_thread``, where the config
    does not set them); empty for one in-process job."""
    if config.executor.kind == "local" and n_jobs <= 1:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for job in jobs:
        point = job.point
        if not point.is_reference and point.label not in out:
            given = thaw_params(point.params)
            out[point.label] = {k: v for k, v in worker_params(point, True).items() if k not in given}
    return {label: params for label, params in out.items() if params}


def _units_record(summary: RunSummary, cache: UnitCache) -> dict[str, Any]:
    """The manifest's ``units``: how many units of this invocation were already in the folder's store, copied from
    the shared unit cache (and which), computed, failed."""
    return {"total": summary.units_total, "in_store": summary.units_cached - summary.units_from_cache,
            "from_cache": summary.units_from_cache, "computed": summary.units_computed,
            "failed": summary.units_failed, "cache": None if cache.path is None else str(cache.path)}


def _finished(store: ResultsStore, folder: Path, keep: list[str]) -> set[str]:
    """Keys of the stored units that need no work: finished, and with every object ``keep`` asks for on disk
    (a unit stored before ``keep`` was asked, or whose object was deleted, is computed again)."""
    finished = store.finished_keys()
    if not keep:
        return finished
    return {row.key for row in store.rows(finished, with_predictions=False) if _has_kept(row, folder, keep)}


def _has_kept(row: UnitRow, folder: Path, keep: list[str]) -> bool:
    """Whether every object ``keep`` asks for of ``row``'s unit is in ``folder`` (always, for the reference)."""
    if not keep or row.codec == REFERENCE:
        return True
    from vcm_plugin.pipeline.objects import kept_paths

    return row.bitstream_sha256 is not None and all(
        p.exists() for p in kept_paths(folder, keep, row.bitstream_sha256, row.decoded_sha256))


def _cached_keys(cache: UnitCache, jobs: list[Job], folder: Path, keep: list[str]) -> set[str]:
    """Keys of the units of ``jobs`` that the shared cache can give (with their ``keep`` objects in ``folder``)."""
    wanted = {key for job in jobs for _, key in job.task_keys}
    return {row.key for row in cache.rows(wanted, with_predictions=False) if _has_kept(row, folder, keep)}


def _copy_from_cache(cache: UnitCache, store: ResultsStore, jobs: list[Job], folder: Path,
                     keep: list[str]) -> tuple[list[Job], int]:
    """Copy the units of ``jobs`` that the shared cache holds into the run's ``store``, under this run's labels;
    the jobs left to compute, and how many units were copied. A cached unit whose ``keep`` objects are not in
    ``folder`` is computed (which writes them)."""
    where = {key: (job, task) for job in jobs for task, key in job.task_keys}
    copied: set[str] = set()
    for row in cache.rows(set(where)):
        job, task = where[row.key]
        if _has_kept(row, folder, keep):
            store.put(replace(row, codec=job.point.label, quality=job.point.quality, scale=job.point.scale,
                              task=task, image_id=str(job.sample.image_id)))
            copied.add(row.key)
    return _pending(jobs, copied)


def _pending(all_jobs: list[Job], finished: set[str]) -> tuple[list[Job], int]:
    """The jobs with the units not in ``finished`` (those units only), and how many units were."""
    todo, cached = [], 0
    for job in all_jobs:
        missing = tuple((t, k) for t, k in job.task_keys if k not in finished)
        cached += len(job.task_keys) - len(missing)
        if missing:
            todo.append(replace(job, task_keys=missing))
    return todo, cached


def preflight(jobs: list[Job], tasks: list[TaskSpec]) -> None:
    """Fail before any work when a codec point or a task model cannot run here.

    Each codec configuration checks each of its qualities (binaries, libraries, weights
    files: found, not loaded), and each task model loads its weights once in this
    process (the in-process executor then reuses it). Errors name the codec label or
    task label and the missing file.
    """
    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.pipeline import units

    checked: set[tuple] = set()
    for job in jobs:
        point = job.point
        if point.is_reference or (point.codec, point.params, point.quality) in checked:
            continue
        checked.add((point.codec, point.params, point.quality))
        try:
            get_codec(point.codec, **thaw_params(point.params)).check_ready(point.quality)  # type: ignore[arg-type]
        except VcmError as exc:
            raise type(exc)(f"codec {point.label!r} at quality {point.quality}: {exc}") from exc
    if not jobs:
        return
    units.init_worker(tasks)
    for spec in tasks:
        try:
            units.task_model(spec.label).load()
        except VcmError as exc:
            raise type(exc)(f"task {spec.label!r}: {exc}") from exc


def _point_line(store: ResultsStore, keys, point_key: tuple, dataset: Dataset, config: RunConfig,
                known: dict[PointLabel, Point]) -> str:
    label, quality, scale = point_key
    parts = []
    for (point, task), by_image in keys.items():
        if (point.label, point.quality, point.scale) != point_key:
            continue
        name = PointLabel(task, point.label, point.quality, point.scale)
        m = known[name] = aggregate(store.rows(set(by_image.values())), name, list(by_image), dataset,
                                    task_name(config, task))
        parts.append(f"{task} {m.primary_name} {m.primary:.2f}" if m.complete else f"{task} {m.failed} failed")
        bpp = f"{m.bpp:.4f} bpp" if m.bpp is not None else "reference"
    scale_txt = f" scale {scale:g}" if scale != 1.0 else ""
    q = "" if quality is None else f" q {quality}"
    return f"  {label}{q}{scale_txt}: {bpp}, " + ", ".join(parts)
