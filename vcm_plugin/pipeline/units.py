"""The unit of work and its execution in a worker: code one image, run the task models on it.

``run_job`` is what worker processes execute: load the image, encode it, decode the
bitstream, and feed the decoded value to every task model at the codec's
``output_point``. It returns one :class:`~vcm_plugin.results.store.UnitRow` per
task model; a failure (unreadable image, codec error, model error) becomes a
``failed`` row whose error names the codec, the image id and the file. Task models
and codecs are built once per process and cached.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from vcm_plugin.codecs.base import Codec
from vcm_plugin.datasets.base import Sample
from vcm_plugin.images.resize import prescale, resize_rgb
from vcm_plugin.results.store import UnitRow


class FrozenMapping(tuple):
    """A hashable mapping (sorted key-value pairs) for nested dict parameters of codecs and task models."""


def freeze_params(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Parameters as a hashable tuple: lists become tuples, dicts :class:`FrozenMapping`."""
    def freeze(value: Any) -> Any:
        if isinstance(value, dict):
            return FrozenMapping(sorted((k, freeze(v)) for k, v in value.items()))
        if isinstance(value, list):
            return tuple(freeze(v) for v in value)
        return value

    return tuple(sorted((k, freeze(v)) for k, v in params.items()))


def thaw_params(params: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """Inverse of :func:`freeze_params` for nested mappings (tuples stay tuples)."""
    def thaw(value: Any) -> Any:
        if isinstance(value, FrozenMapping):
            return {k: thaw(v) for k, v in value}
        if isinstance(value, tuple):
            return tuple(thaw(v) for v in value)
        return value

    return {k: thaw(v) for k, v in params}


@dataclass(frozen=True)
class CodecPoint:
    """A codec configuration at one quality and pre-scale; ``codec=None`` is the reference."""

    label: str
    codec: str | None
    params: tuple[tuple[str, Any], ...]
    quality: float | int | None
    scale: float = 1.0

    @property
    def is_reference(self) -> bool:
        return self.codec is None


@dataclass(frozen=True)
class TaskSpec:
    """A task model entry: label, registered name, parameters (as a hashable tuple)."""

    label: str
    model: str
    params: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Job:
    """One (codec point, image) and the keys of the task rows still to compute."""

    point: CodecPoint
    sample: Sample
    task_keys: tuple[tuple[str, str], ...]  # (task label, unit key)
    keep: tuple[str, ...] = ()  # what to store in ``folder`` (pipeline.objects.KEEP_KINDS)
    folder: str | None = None  # the run's output folder


#: Rough CPU time per pixel of one task model, relative to JPEG's coding (YOLOv5n: ~100), for :func:`expected_cost`.
TASK_RELATIVE_COST = 100.0


def expected_cost(job: Job) -> float:
    """A rough CPU cost of ``job``, for ordering work (largest first), not a time.

    Pixels x (the task models + the codec's :meth:`~vcm_plugin.codecs.base.Codec.cost_per_pixel` x the
    pre-scale squared x 1..4 from the fewest-bits to the most-bits end of its quality range: encoders
    search more at high rates).
    """
    point, sample = job.point, job.sample
    pixels = float(sample.height * sample.width)
    cost = len(job.task_keys) * TASK_RELATIVE_COST
    if not point.is_reference:
        from vcm_plugin.codecs.registry import get_codec_class

        cls = get_codec_class(point.codec)  # type: ignore[arg-type]
        quality = cls.quality_range
        span = float(quality.maximum) - float(quality.minimum)
        position = (float(point.quality) - float(quality.minimum)) / span if span > 0 else 0.5  # type: ignore[arg-type]
        more_bits = position if quality.higher_is_more_bits else 1.0 - position
        cost += cls.cost_per_pixel() * point.scale ** 2 * (1.0 + 3.0 * min(max(more_bits, 0.0), 1.0))
    return pixels * cost


# -- per-process caches -----------------------------------------------------------------
_MODELS: dict[str, Any] = {}
_CODECS: dict[tuple, Codec] = {}
_TASKS: dict[str, TaskSpec] = {}
_ONE_THREAD = False  # in a worker process of a parallel run: codecs use their one_thread parameters
_METRICS_S = [0.0]  # seconds this process spent on image metrics (not stored: see metrics_seconds)


def metrics_seconds() -> float:
    """Seconds this process has spent computing image metrics (PSNR, MS-SSIM, ...) of decoded pictures; the
    executors report them per worker (:class:`~vcm_plugin.pipeline.executors.WorkerLoad`)."""
    return _METRICS_S[0]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_MALLOC_TUNED: list[bool] = []


def tune_malloc() -> bool:
    """Set glibc's malloc to serve blocks under 32 MiB from its heap and keep up to 64 MiB free at the top of it
    (the maxima glibc's own dynamic thresholds reach), once per process; False where there is no glibc.

    The pictures, feature maps and MS-SSIM temporaries of a unit are 0.1-30 MB blocks, allocated and freed
    hundreds of times per unit. Under the starting thresholds (128 KiB), or Dask's nanny's
    ``MALLOC_TRIM_THRESHOLD_=65536``, each is a fresh ``mmap`` whose pages fault in zeroed: MS-SSIM took
    3-4x longer on a Dask worker and 1.4x longer in a plain process than with these settings. Results do
    not change (an allocator setting).
    """
    if not _MALLOC_TUNED:
        done = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(None).mallopt
                done = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 64 << 20))
            except (OSError, AttributeError):  # not glibc (e.g. musl): leave malloc as it is
                done = False
        _MALLOC_TUNED.append(done)
    return _MALLOC_TUNED[0]


def init_worker(tasks: list[TaskSpec], torch_threads: int | None = None) -> None:
    """Process-pool initializer: remember the task specs; models load on first use.

    In-process (``torch_threads`` None) models already loaded for the same specs are
    kept (the run's preflight loaded them); a pool worker always starts empty, never
    reusing a model inherited through fork. Every process that runs units tunes malloc (:func:`tune_malloc`).
    A worker of one thread (``torch_threads`` 1,
    as the harness's pool and Dask workers are) also builds its codecs with their
    :meth:`~vcm_plugin.codecs.base.Codec.one_thread_params`, where the config does not
    set them: N workers on N cores, not N times each codec's own thread pool.
    """
    global _ONE_THREAD
    tune_malloc()
    specs = {t.label: t for t in tasks}
    if torch_threads is not None or specs != _TASKS:
        _MODELS.clear()
    _TASKS.clear()
    _TASKS.update(specs)
    _ONE_THREAD = torch_threads == 1
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(torch_threads))


def task_model(label: str):
    """The task model of entry ``label``, built once per process."""
    if label not in _MODELS:
        from vcm_plugin.tasks.registry import get_task_model

        spec = _TASKS[label]
        _MODELS[label] = get_task_model(spec.model, **thaw_params(spec.params))
    return _MODELS[label]


def worker_params(point: CodecPoint, one_thread: bool) -> dict[str, Any]:
    """The parameters a codec of ``point`` is built with: the point's, plus (``one_thread``) the codec's
    :meth:`~vcm_plugin.codecs.base.Codec.one_thread_params` of the parameters the point does not set.

    Machine parameters only (they change neither streams nor pictures): unit keys come from the point's own.
    """
    params = thaw_params(point.params)
    if one_thread:
        from vcm_plugin.codecs.registry import get_codec_class

        for name, value in get_codec_class(point.codec).one_thread_params().items():  # type: ignore[arg-type]
            params.setdefault(name, value)
    return params


def codec_for(point: CodecPoint, one_thread: bool | None = None) -> Codec:
    """The codec of ``point``, built once per process; ``one_thread`` (default: this process is a worker of a
    parallel run) adds the codec's one-thread parameters (:func:`worker_params`)."""
    one_thread = _ONE_THREAD if one_thread is None else one_thread
    key = (point.codec, point.params, one_thread)
    if key not in _CODECS:
        from vcm_plugin.codecs.registry import get_codec

        _CODECS[key] = get_codec(point.codec, **worker_params(point, one_thread))  # type: ignore[arg-type]
    return _CODECS[key]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, Exception) or type(exc).__module__.startswith("vcm_plugin"):
        return text
    return f"{type(exc).__name__}: {text}"


def describe_unit(job: Job) -> str:
    """The codec label, quality, image id and file of ``job``, for messages."""
    point, sample = job.point, job.sample
    return f"codec {point.label!r} at quality {point.quality}, image id {sample.image_id} ({sample.path})"


def _unit_row(job: Job, task: str, key: str, **fields: Any) -> UnitRow:
    point = job.point
    return UnitRow(key=key, task=task, codec=point.label, quality=point.quality, scale=point.scale,
                   image_id=str(job.sample.image_id), **fields)


def failed_rows(job: Job, message: str) -> list[UnitRow]:
    """One ``failed`` row per task unit of ``job``, each with ``message``."""
    return [_unit_row(job, t, k, status="failed", error=message) for t, k in job.task_keys]


def run_job_limited(job: Job, timeout: float | None = None) -> list[UnitRow]:
    """:func:`run_job` with a wall-clock limit in seconds (``None``: no limit).

    The job runs in a daemon thread; when it is still running after ``timeout`` its rows
    are returned as failed ("timed out", naming the codec and image id) and the thread is
    abandoned: Python cannot kill a thread, so a truly hung codec keeps one thread (and
    any child process it waits on) until the worker process exits, but the run goes on.
    """
    if not timeout:
        return run_job(job)
    result: list[list[UnitRow]] = []
    thread = threading.Thread(target=lambda: result.append(run_job(job)), daemon=True,
                              name=f"unit {job.point.label} {job.sample.image_id}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or not result:
        return failed_rows(job, f"{describe_unit(job)}: timed out after {timeout:g} s (executor.task_timeout)")
    return result[0]


def run_jobs(jobs: list[Job], timeout: float | None = None) -> list[list[UnitRow]]:
    """A shard of jobs run one after the other (the unit of work of distributed executors)."""
    return [run_job_limited(job, timeout) for job in jobs]


def _identify_outputs(job: Job, bitstream: Any, value: Any) -> dict[str, str]:
    """The hashes of a unit's bitstream and decoded value; the objects ``job.keep`` asks for are written."""
    from vcm_plugin.pipeline import objects

    hashes = {"bitstream_sha256": objects.bitstream_sha256(bitstream), "decoded_sha256": objects.decoded_sha256(value)}
    if job.folder is not None and "bitstreams" in job.keep:
        objects.keep_bitstream(job.folder, bitstream, hashes["bitstream_sha256"])
    if job.folder is not None and "reconstructions" in job.keep:
        objects.keep_reconstruction(job.folder, value, hashes["decoded_sha256"])
    return hashes


def run_job(job: Job) -> list[UnitRow]:
    """Execute one job; never raises for a bad input (failed rows say why)."""
    point, sample = job.point, job.sample
    where = describe_unit(job)
    try:
        image = sample.load()
    except Exception as exc:  # the file is missing or unreadable: every task fails for this image
        return failed_rows(job, f"{where}: {_describe(exc)}")

    pixels = sample.height * sample.width
    coded: dict[str, Any] = {"bits": None, "side_info_bits": None, "metrics": {}, "encode_s": 0.0, "decode_s": 0.0,
                             "front_s": None, "estimated_bits": None, "bitstream_sha256": None,
                             "decoded_sha256": None}
    if point.is_reference:
        value, output_point = image, "input"
    else:
        try:
            codec = codec_for(point)
            start = time.perf_counter()
            bitstream = codec.encode(prescale(image, point.scale), point.quality)  # type: ignore[arg-type]
            encoded = time.perf_counter()
            value = codec.decode(bitstream)
            coded["decode_s"] = time.perf_counter() - encoded
            coded["encode_s"] = encoded - start  # the whole encode, a task-model front included
            coded["front_s"] = bitstream.front_s  # that front's part of it (split codecs), never in the stream
            coded["bits"] = bitstream.num_bits  # bpp is always over the ORIGINAL pixels
            coded["side_info_bits"] = bitstream.side_info_bits  # out of band, never in bits
            coded["estimated_bits"] = bitstream.estimated_bits  # a learned codec's estimate, never the rate
            coded.update(_identify_outputs(job, bitstream, value))
            output_point = codec.output_point
            if output_point == "input":  # every registered image metric (IMAGE_METRICS), where defined
                from vcm_plugin.images.metrics import image_metrics

                value = resize_rgb(value, sample.height, sample.width)
                start = time.perf_counter()
                coded["metrics"] = {k: v for k, v in image_metrics(image, value).items() if v is not None}
                _METRICS_S[0] += time.perf_counter() - start
        except Exception as exc:
            return failed_rows(job, f"{where}: {_describe(exc)}")

    rows = []
    for task, key in job.task_keys:
        try:
            model = task_model(task)
            model.load()  # not timed
            start = time.perf_counter()
            predictions = model.run_from(output_point, value)
            inference_s = time.perf_counter() - start
            record = predictions.to_json()
            json.dumps(record)  # fail here, not in the parent, if not serialisable
        except Exception as exc:
            detail = _describe(exc)
            if not type(exc).__module__.startswith("vcm_plugin"):
                detail += " | " + traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()
            rows.append(_unit_row(job, task, key, status="failed", error=f"{where}, task {task!r}: {detail}"))
            continue
        rows.append(_unit_row(job, task, key, status="ok", pixels=pixels, inference_s=inference_s,
                              predictions=record, **coded))
    return rows
