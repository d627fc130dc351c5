"""The measurement engine: per-point aggregates of stored units, and the tables of a run folder.

:func:`aggregate` is the one place where a point's numbers are computed from its per-image rows
(reports, progress lines, ``vcm compare``, the benchmarks and the experiments all use it):

- ``bpp`` = total bits of all real bitstreams / total ORIGINAL pixels (the VCM anchors' and
  CompressAI-Vision's rate); ``mean_bpp`` (mean of per-image bpp) beside it, never swapped;
  ``estimated_bpp`` (learned codecs: total likelihood-estimated bits / total ORIGINAL pixels) beside it too;
- each registered image metric (:data:`~vcm_plugin.images.metrics.IMAGE_METRICS`: PSNR-Y and
  PSNR-RGB in dB, MS-SSIM) is the mean of the per-image values where defined (CompressAI's
  convention for PSNR: a mean of dB values; ``inf`` when every image is identical);
- times are mean wall seconds per image (encode, decode, task-model inference);
- the task metrics come from the task's evaluator (:func:`vcm_plugin.evaluation.kinds.evaluator_for`)
  fed the stored predictions in dataset order, only when no image failed (a partial set
  would give a wrong number); evaluators that can also return per-image scores.

:func:`load` gives the tables of a run folder as plain dataclasses: ``pandas`` is not a
dependency of this package and the tables are small (one row per point, one per unit), so
``pandas.DataFrame([dataclasses.asdict(p) for p in results.points])`` is all a user of pandas needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcm_plugin.images.metrics import IMAGE_METRICS
from vcm_plugin.results.store import REFERENCE, ResultsStore, StoreError, UnitRow

STORE_NAME = "results.sqlite"


@dataclass(frozen=True)
class PointLabel:
    """What names a point: task label, codec label, quality (None: the reference), pre-scale."""

    task: str
    codec: str
    quality: float | int | None
    scale: float = 1.0


@dataclass
class Point:
    """The per-point table's row: one (task, codec label, quality, scale) over the run's images.

    ``images``: images of the point; ``failed``: those without a successful stored unit;
    ``bits``: total bits of all bitstreams (None for the reference, or when a row has none);
    ``side_info_bits``: total bits the codec's mode sent out of band, NOT in ``bits`` (0: every stream
    self-contained); ``estimated_bits``: total of a learned codec's likelihood estimates, NOT the rate (None
    unless every unit has one); ``pixels``: total ORIGINAL pixels; ``image_metrics``: mean of each registered
    image metric (None where undefined); ``encode_s`` / ``decode_s`` / ``inference_s``: mean seconds per image;
    ``front_s``: mean seconds per image of the task model's front inside ``encode_s`` (a codec coding a cut
    point's value), None unless every unit has one (image codecs, ``direct``, rows stored before it was recorded);
    ``metrics``: the task metrics (percent for AP / top-k), empty unless :attr:`complete`;
    ``image_scores``: per-image task scores (image id -> name -> value) where the evaluator gives them;
    ``per_image``: bits, pixels and the primary metric's resampler in dataset order (complete points with
    a rate and a dataset), what the bootstrap intervals recompute each point from.
    """

    label: PointLabel
    images: int
    failed: int
    bits: int | None = None
    side_info_bits: int | None = None
    estimated_bits: float | None = None
    pixels: int = 0
    mean_bpp: float | None = None
    image_metrics: dict[str, float | None] = field(default_factory=dict)
    encode_s: float | None = None
    decode_s: float | None = None
    inference_s: float | None = None
    front_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    primary_name: str = ""
    errors: list[str] = field(default_factory=list)
    image_scores: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    per_image: Any = field(default=None, repr=False, compare=False)  # evaluation.bootstrap.PerImage

    task = property(lambda self: self.label.task)
    codec = property(lambda self: self.label.codec)
    quality = property(lambda self: self.label.quality)
    scale = property(lambda self: self.label.scale)

    @property
    def complete(self) -> bool:
        return self.failed == 0 and self.images > 0

    @property
    def bpp(self) -> float | None:
        """Total bits / total original pixels (None for the reference point)."""
        return None if self.bits is None or not self.pixels else self.bits / self.pixels

    @property
    def estimated_bpp(self) -> float | None:
        """Total likelihood-estimated bits / total original pixels: a learned codec's estimate beside
        :attr:`bpp`, never the rate (None for codecs without one)."""
        return None if self.estimated_bits is None or not self.pixels else self.estimated_bits / self.pixels

    def value(self, name: str) -> float:
        """A task metric or an image metric by name (NaN when absent or undefined)."""
        value = self.metrics.get(name, self.image_metrics.get(name))
        return math.nan if value is None else value

    @property
    def primary(self) -> float:
        """The task's primary metric (what reports plot and compute BD-rate on)."""
        return self.value(self.primary_name)


@dataclass(frozen=True)
class ImageRow:
    """The per-image table's row: a stored unit of a point, with its per-image task ``scores``."""

    label: PointLabel
    unit: UnitRow
    scores: dict[str, float] = field(default_factory=dict)


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if all(math.isinf(v) for v in vals):
        return math.inf
    return sum(vals) / len(vals)


def aggregate(rows: Iterable[UnitRow], label: PointLabel, image_ids: Sequence[str] | None = None,
              dataset: Any = None, task: str | None = None) -> Point:
    """The :class:`Point` of ``rows`` (the stored units of one point, one per image; see the module docstring).

    ``image_ids``: the point's images (default: those of ``rows``; an image without a row counts
    as failed). With ``dataset`` and ``task`` (the task name, e.g. ``"detection"``), the task
    metrics of a complete point are computed by the task's evaluator over ``dataset``'s samples.
    """
    from vcm_plugin.evaluation.kinds import evaluator_for, primary_metric

    by_image = {r.image_id: r for r in rows}
    ids = list(by_image) if image_ids is None else [str(i) for i in image_ids]
    present = [by_image[i] for i in ids if i in by_image]
    ok = [r for r in present if r.status == "ok"]
    point = Point(label, images=len(ids), failed=len(ids) - len(ok),
                  errors=[r.error for r in present if r.status == "failed" and r.error])
    if ok:
        bits = [r.bits for r in ok]
        point.bits = None if any(b is None for b in bits) else sum(bits)  # type: ignore[arg-type]
        point.pixels = sum(r.pixels or 0 for r in ok)
        if point.bits is not None:
            point.side_info_bits = sum(r.side_info_bits or 0 for r in ok)
        estimated = [r.estimated_bits for r in ok]
        point.estimated_bits = None if any(e is None for e in estimated) else sum(estimated)  # type: ignore[arg-type]
        if point.bits is not None:
            point.mean_bpp = sum(r.bits / r.pixels for r in ok) / len(ok)  # type: ignore[operator]
        point.image_metrics = {name: _mean(r.metrics.get(name) for r in ok) for name in IMAGE_METRICS}
        point.encode_s, point.decode_s = _mean(r.encode_s for r in ok), _mean(r.decode_s for r in ok)
        point.inference_s = _mean(r.inference_s for r in ok)
        fronts = [r.front_s for r in ok]
        point.front_s = None if any(f is None for f in fronts) else _mean(fronts)  # a part of encode_s: all or none
    if task is None:
        return point
    evaluator = evaluator_for(dataset, task)
    point.primary_name = primary_metric(task, evaluator)
    if point.complete and evaluator is not None:
        from vcm_plugin.tasks.predictions import predictions_from_json

        evaluator.reset()
        order = []
        for sample in dataset:
            order.append(str(sample.image_id))
            evaluator.process(sample, predictions_from_json(by_image[order[-1]].predictions))
        point.metrics = {k: float(v) for k, v in evaluator.evaluate().items()}
        point.image_scores = {str(k): v for k, v in evaluator.per_image().items()}
        point.per_image = _per_image(point, [by_image[i] for i in order], evaluator)
    elif point.complete and evaluator is None and dataset is not None:  # scored by an image metric: its per-image mean
        point.per_image = _per_image(point, [by_image[str(s.image_id)] for s in dataset], None)
    return point


def _per_image(point: Point, rows: list[UnitRow], evaluator: Any) -> Any:
    """The :class:`~vcm_plugin.evaluation.bootstrap.PerImage` of a complete point (``rows`` in dataset
    order), None without a rate or a resampler of its primary metric."""
    import numpy as np

    from vcm_plugin.evaluation.base import EvaluationError
    from vcm_plugin.evaluation.bootstrap import PerImage, PerImageMean

    if point.bits is None or not rows:
        return None
    if evaluator is not None:
        try:
            metric = evaluator.resampler()
        except EvaluationError:
            return None
    else:
        values = [r.metrics.get(point.primary_name) for r in rows]
        if any(v is None for v in values):
            return None
        metric = PerImageMean(np.array(values, dtype=np.float64))
    return PerImage(np.array([r.bits for r in rows], dtype=np.float64),
                    np.array([r.pixels for r in rows], dtype=np.float64), metric)


def sort_points(points: Iterable[Point]) -> list[Point]:
    """Report order: by task, the reference first, then codec label, scale and rate."""
    return sorted(points, key=lambda p: (p.task, p.codec != REFERENCE, p.codec, p.scale,
                                         p.bpp if p.bpp is not None else -1.0))


def grid_points(store: ResultsStore) -> dict[PointLabel, dict[str, str]]:
    """The latest run's units: point label -> image id -> unit key, in the run's order."""
    points: dict[PointLabel, dict[str, str]] = {}
    for codec, quality, scale, task, image_id, key in store.grid():
        q = None if quality is None else (int(quality) if float(quality).is_integer() else quality)
        points.setdefault(PointLabel(task, codec, q, scale), {})[image_id] = key
    return points


@dataclass
class Results:
    """The tables of a run folder: ``points`` (per point, report order) and ``images`` (per unit)."""

    folder: Path
    config: Any
    points: list[Point]
    images: list[ImageRow]


def task_name(config: Any, task: str) -> str:
    """The task name (``detection``, ``classification``, ...) of the config's task entry ``task``."""
    entry = config.tasks[task]
    if entry.task:
        return entry.task
    from vcm_plugin.tasks.registry import get_task_model

    name, params = config.task_params(task)
    return get_task_model(name, **params).task  # the instance's: a detectron2 Mask R-CNN config is segmentation


def run_config(folder: str | Path) -> Any:
    """The :class:`~vcm_plugin.config.RunConfig` of the run in ``folder`` (the ``config.yaml`` a run writes);
    :class:`StoreError` naming the folder when it is not a run folder (no results store, no config.yaml)."""
    from vcm_plugin.config import config_from_dict, read_yaml_mapping

    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"run folder {folder} does not exist or is not a folder")
    for name in (STORE_NAME, "config.yaml"):
        if not (folder / name).is_file():
            raise StoreError(f"{folder} is not a run folder: it holds no {name}; run `vcm run` into it first")
    return config_from_dict(read_yaml_mapping(folder / "config.yaml"), source=str(folder / "config.yaml"),
                            check_plugins=False)


def load(folder: str | Path, dataset: Any = None, known: dict[PointLabel, Point] | None = None) -> Results:
    """The per-point and per-image tables of the run in ``folder`` (its ``config.yaml`` and results store).

    Only the units of the folder's latest run are read (rows of older configurations in the
    same store are not). The dataset is rebuilt from ``config.yaml`` (relative paths in it are
    relative to the working directory of that run) unless given; ``known``: points already
    aggregated (the run's progress lines), reused as they are.
    """
    folder = Path(folder)
    config = run_config(folder)
    if dataset is None:
        from vcm_plugin.datasets.registry import get_dataset

        dataset = get_dataset(config.dataset.name, **config.dataset_params())
    known = known or {}
    points, images = [], []
    with ResultsStore(folder / STORE_NAME) as store:
        for label, keys in grid_points(store).items():
            rows = list(store.rows(set(keys.values())))
            point = known.get(label) or aggregate(rows, label, list(keys), dataset, task_name(config, label.task))
            points.append(point)
            images += [ImageRow(label, r, point.image_scores.get(r.image_id, {})) for r in rows]
    return Results(folder, config, sort_points(points), images)
