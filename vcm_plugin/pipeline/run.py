"""``vcm run``: the rate-accuracy grid over a dataset, resumable, then the reports.

The grid is (codec configuration x quality x scale) plus the uncompressed reference
point, times every image, times every task model. Units already in the output
folder's results store are skipped; the rest run in-process (``jobs=1``) or in a pool
of worker processes that each load their task models once. Only this (parent)
process writes the store. A second run on the same output folder is refused.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vcm_plugin import __version__
from vcm_plugin.config import RunConfig, dump_config
from vcm_plugin.datasets.base import Dataset, Sample
from vcm_plugin.errors import VcmError
from vcm_plugin.pipeline.executors import execute
from vcm_plugin.pipeline.store import ResultsStore, unit_key
from vcm_plugin.pipeline.units import REFERENCE, CodecPoint, Job, TaskSpec, freeze_params, thaw_params

LOCK_NAME = ".vcm-run.lock"
STORE_NAME = "results.sqlite"


class RunError(VcmError, RuntimeError):
    """The run cannot start (output folder unusable or busy, bad dataset, ...)."""


@dataclass
class RunSummary:
    output: Path
    units_total: int = 0
    units_cached: int = 0
    units_computed: int = 0
    units_failed: int = 0
    wall_s: float = 0.0
    reports: dict[str, Path] = field(default_factory=dict)


# -- the output folder ------------------------------------------------------------------
class OutputLock:
    """An exclusive lock on an output folder (released when the process dies)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fh = None

    def __enter__(self) -> OutputLock:
        try:
            self._fh = open(self.path, "a+")
        except OSError as exc:
            raise RunError(f"output folder {self.path.parent} is not writable: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise RunError(f"output folder {self.path.parent} is in use by another vcm run ({holder}); "
                           "wait for it to finish or choose another --output") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}")
        self._fh.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()


def prepare_output(folder: str | Path) -> Path:
    """Create the output folder and check it is writable; errors name it."""
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
        fields = getattr(get_codec_class(name), "__dataclass_fields__", {})
        if config.weights.search_path and "search_path" in fields and "search_path" not in params:
            params["search_path"] = list(config.weights.search_path)  # learned codecs' weight files
        for scale in entry.scales:
            for quality in entry.qualities:
                q = int(quality) if float(quality).is_integer() else float(quality)
                points.append(CodecPoint(label, name, freeze_params(params), q, scale))
    return points


def task_specs(config: RunConfig) -> list[TaskSpec]:
    """Task entries; the config's weights search path is passed to models that take one."""
    from vcm_plugin.tasks.registry import get_task_model_class

    specs = []
    for label in config.tasks:
        name, params = config.task_params(label)
        cls = get_task_model_class(name)
        fields = getattr(cls, "__dataclass_fields__", {})
        if config.weights.search_path and "search_path" in fields and "search_path" not in params:
            params["search_path"] = list(config.weights.search_path)
        specs.append(TaskSpec(label, name, freeze_params(params)))
    return specs


def _codec_identity(point: CodecPoint) -> dict[str, Any]:
    if point.is_reference:
        return {"codec": None}
    from vcm_plugin.pipeline.units import codec_for

    codec = codec_for(point)
    identity = {"codec": point.codec, "params": codec.params(), "version": codec.version()}
    weights = codec.weights_identity(point.quality)  # type: ignore[arg-type]
    if weights is not None:  # a retrained checkpoint at the same path must not reuse old rows
        identity["weights"] = weights
    return identity


def unit_identity(point: CodecPoint, codec_id: dict[str, Any], task_id: dict[str, Any], dataset_id: dict[str, Any],
                  sample: Sample) -> dict[str, Any]:
    """Everything that determines one stored row."""
    return {"v": 1, **codec_id, "quality": point.quality, "scale": point.scale, "task": task_id,
            "dataset": dataset_id, "image": str(sample.image_id)}


def build_jobs(config: RunConfig, dataset: Dataset, tasks: list[TaskSpec],
               task_ids: dict[str, dict[str, Any]]) -> tuple[list[Job], dict[tuple, dict[str, str]]]:
    """All jobs of the grid, and the key of every (point, task, image)."""
    dataset_id = dataset.identity()
    samples = list(dataset)
    light = {str(s.image_id): replace(s, annotations=[]) for s in samples}  # workers need no annotations
    jobs: list[Job] = []
    keys: dict[tuple, dict[str, str]] = defaultdict(dict)  # (point, task) -> image_id -> key
    for point in codec_points(config):
        codec_id = _codec_identity(point)
        for sample in samples:
            task_keys = []
            for spec in tasks:
                key = unit_key(unit_identity(point, codec_id, task_ids[spec.label], dataset_id, sample))
                keys[(point, spec.label)][str(sample.image_id)] = key
                task_keys.append((spec.label, key))
            jobs.append(Job(point, light[str(sample.image_id)], tuple(task_keys)))
    return jobs, keys


# -- executing ----------------------------------------------------------------------------
def run(config: RunConfig, output: str | Path | None = None, jobs: int | None = None, quiet: bool = False,
        log: Callable[[str], None] = print) -> RunSummary:
    """Run the whole grid of ``config`` into ``output`` and write the reports."""
    from vcm_plugin.datasets.registry import get_dataset
    from vcm_plugin.reports.write import write_reports
    from vcm_plugin.tasks.registry import get_task_model

    folder = prepare_output(output or config.output)
    summary = RunSummary(output=folder)
    started = time.perf_counter()
    with OutputLock(folder):
        try:
            (folder / "config.yaml").write_text(dump_config(config))
        except OSError as exc:  # e.g. a full disk
            raise RunError(f"cannot write {folder / 'config.yaml'}: {exc.strerror or exc}") from exc
        dataset = get_dataset(config.dataset.name, **config.dataset_params())
        tasks = task_specs(config)
        task_ids = {}
        for spec in tasks:  # identity (incl. the weights hash) without loading the network
            model = get_task_model(spec.model, **thaw_params(spec.params))
            task_ids[spec.label] = {"vcm": __version__.split(".")[0], **model.identity()}
        all_jobs, keys = build_jobs(config, dataset, tasks, task_ids)
        n_jobs = jobs or config.jobs or os.cpu_count() or 1
        with ResultsStore(folder / STORE_NAME) as store:
            finished = store.finished_keys()
            todo = []
            for job in all_jobs:
                missing = tuple((t, k) for t, k in job.task_keys if k not in finished)
                summary.units_total += len(job.task_keys)
                summary.units_cached += len(job.task_keys) - len(missing)
                if missing:
                    todo.append(Job(job.point, job.sample, missing))
            preflight(todo, tasks)
            remaining = _remaining_per_point(todo)
            known: dict[tuple, Any] = {}  # point metrics computed for the progress lines, reused by the reports
            bar = tqdm(total=sum(len(j.task_keys) for j in todo), desc="units", unit="unit", disable=quiet)
            for rows in execute(todo, tasks, config.executor, n_jobs):
                for row in rows:
                    store.put(row)
                    summary.units_computed += 1
                    summary.units_failed += row.status == "failed"
                bar.update(len(rows))
                point_key = (rows[0].codec, rows[0].quality, rows[0].scale) if rows else None
                if point_key is not None:
                    remaining[point_key] -= 1
                    if remaining[point_key] == 0 and not quiet:
                        bar.write(_point_line(store, keys, point_key, dataset, config, known))
            bar.close()
            summary.reports = write_reports(config, dataset, store, keys, folder, log=None if quiet else log,
                                            known=known)
    summary.wall_s = time.perf_counter() - started
    if not quiet:
        log(f"done in {summary.wall_s:.1f} s: {summary.units_computed} units computed "
            f"({summary.units_failed} failed), {summary.units_cached} cache hits of {summary.units_total}; "
            f"reports in {folder}")
    return summary


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


def _remaining_per_point(jobs: list[Job]) -> dict[tuple, int]:
    counts: dict[tuple, int] = defaultdict(int)
    for job in jobs:
        counts[(job.point.label, job.point.quality, job.point.scale)] += 1
    return counts


def _point_line(store: ResultsStore, keys, point_key: tuple, dataset: Dataset, config: RunConfig,
                known: dict[tuple, Any]) -> str:
    from vcm_plugin.reports.write import point_metrics

    label, quality, scale = point_key
    parts = []
    for (point, task), by_image in keys.items():
        if (point.label, point.quality, point.scale) != point_key:
            continue
        m = known[(point, task)] = point_metrics(store, by_image, dataset, config, task)
        parts.append(f"{task} {m.primary_name} {m.primary:.2f}" if m.complete else f"{task} {m.failed} failed")
        bpp = f"{m.bpp:.4f} bpp" if m.bpp is not None else "reference"
    scale_txt = f" scale {scale:g}" if scale != 1.0 else ""
    q = "" if quality is None else f" q {quality}"
    return f"  {label}{q}{scale_txt}: {bpp}, " + ", ".join(parts)
