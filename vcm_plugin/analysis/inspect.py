"""Per-image analysis of a run (``vcm inspect RUN``): which images drive a codec's BD-rate against an anchor.

From the run's results (:func:`vcm_plugin.results.load`; the dataset is rebuilt from the run's
``config.yaml``), for every task, every anchor and every other codec (at each of its pre-scales;
against the anchor at the same scale, else at scale 1, as the BD-rate table does):

- the per-image curves: each complete point gives every image its bpp (bits / ORIGINAL pixels of
  that image) and its task score. The score is the evaluator's per-image score where it has one
  (:meth:`~vcm_plugin.evaluation.base.Evaluator.per_image`: top-1 for classification), else the
  task's primary metric of that image ALONE (the evaluator run on one image: e.g. the AP of one
  COCO image; images where it is undefined, no ground-truth object, are left out);
- ``matched_rate.csv``: per image and codec point, the anchor's per-image score interpolated to
  the codec's rate (piecewise linear in log10(bpp), within the anchor's per-image rate range
  only) and the difference codec - anchor at that matched rate (metric units, e.g. AP points);
- ``drivers.csv``: the images ranked by their contribution to the codec-vs-anchor difference,
  measured as the MEAN MATCHED-RATE DELTA of the image (mean over its matched points; a per-image
  BD-metric with linear interpolation), most negative first: the images where the codec loses
  most task accuracy against the anchor at equal rate, which push its BD-rate up. (Not a
  leave-one-out BD-rate: AP does not decompose over images, so leaving one out would need a full
  re-evaluation per image and point.) ``contribution`` = mean delta / number of images, the
  image's share of the dataset-mean delta;
- ``gallery/`` (:mod:`vcm_plugin.analysis.gallery`): the worst images of each comparison, the
  codec's and the anchor's decoded image side by side with the task model's stored predictions
  drawn on them, and ``index.html``.

Only complete points are used; the incomplete ones (a failed unit) are named in the log, in
:attr:`InspectReport.left_out` and in ``index.html``.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vcm_plugin.errors import VcmError
from vcm_plugin.results import REFERENCE, Point, UnitRow

log = logging.getLogger(__name__)

OUTPUT = "inspect"


class InspectError(VcmError, ValueError):
    """A run folder cannot be inspected (names the folder and what is missing)."""


@dataclass(frozen=True)
class ImagePoint:
    """One image at one codec point: ``bpp`` = its bits / its ORIGINAL pixels, ``score`` in the metric's unit."""

    quality: float | int
    bpp: float
    score: float


@dataclass(frozen=True)
class Comparison:
    """One codec against one anchor on one task's ``metric``, at the codec's pre-scale ``scale``."""

    task: str
    metric: str
    codec: str
    anchor: str
    scale: float
    anchor_scale: float


@dataclass(frozen=True)
class MatchedRow:
    """An image at a codec point, and the anchor's score of that image interpolated to the same rate."""

    comparison: Comparison
    image_id: str
    point: ImagePoint
    anchor_score: float | None  # None: the rate is outside the anchor's per-image rate range
    delta: float | None  # score - anchor_score


@dataclass(frozen=True)
class Driver:
    """An image's mean matched-rate delta in a comparison; ``worst``: its matched row with the lowest delta."""

    comparison: Comparison
    image_id: str
    matched: int
    mean_delta: float
    contribution: float
    worst: MatchedRow


@dataclass
class InspectReport:
    """What :func:`inspect_run` found and wrote (``files`` by name)."""

    folder: Path
    matched: list[MatchedRow] = field(default_factory=list)
    drivers: list[Driver] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    skipped_tasks: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def point_name(point: Point) -> str:
    """``task codec q Q [scale S]`` for messages."""
    return f"{point.task} {point.codec} q {point.quality}" + (f" scale {point.scale:g}" if point.scale != 1 else "")


def image_scores(point: Point, rows: dict[str, UnitRow], samples: dict[str, Any], evaluator: Any) -> dict[str, float]:
    """Image id -> the point's per-image score of its primary metric (see the module docstring); NaN-free."""
    from vcm_plugin.tasks.predictions import predictions_from_json

    name = point.primary_name
    if point.image_scores and all(name in s for s in point.image_scores.values()):
        return {i: float(s[name]) for i, s in point.image_scores.items() if math.isfinite(s[name])}
    scores = {}
    for image_id, row in rows.items():
        evaluator.reset()
        evaluator.process(samples[image_id], predictions_from_json(row.predictions))  # type: ignore[arg-type]
        value = evaluator.evaluate().get(name, math.nan)
        if math.isfinite(value):
            scores[image_id] = float(value)
    return scores


def matched_rows(comparison: Comparison, codec: dict[str, list[ImagePoint]],
                 anchor: dict[str, list[ImagePoint]]) -> list[MatchedRow]:
    """Per image (in both curves) and codec point: the anchor's score at the codec's rate (log10 bpp, linear)."""
    rows = []
    for image_id, points in codec.items():
        if image_id not in anchor:
            continue
        ref = sorted(anchor[image_id], key=lambda p: p.bpp)
        xs, ys = np.log10([p.bpp for p in ref]), np.array([p.score for p in ref])
        for p in sorted(points, key=lambda p: p.bpp):
            x = math.log10(p.bpp)
            inside = len(ref) >= 2 and xs[0] <= x <= xs[-1]
            a = float(np.interp(x, xs, ys)) if inside else None
            rows.append(MatchedRow(comparison, image_id, p, a, None if a is None else p.score - a))
    return rows


def drivers(rows: Sequence[MatchedRow], images: int) -> list[Driver]:
    """The images of one comparison ranked by mean matched-rate delta, most negative first."""
    by_image: dict[str, list[MatchedRow]] = defaultdict(list)
    for row in rows:
        if row.delta is not None:
            by_image[row.image_id].append(row)
    out = []
    for image_id, matched in by_image.items():
        mean = sum(r.delta for r in matched) / len(matched)  # type: ignore[misc]
        out.append(Driver(matched[0].comparison, image_id, len(matched), mean, mean / max(images, 1),
                          min(matched, key=lambda r: r.delta)))  # type: ignore[arg-type, return-value]
    return sorted(out, key=lambda d: (d.mean_delta, d.image_id))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    try:
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    except OSError as exc:
        raise InspectError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _cmp_cells(c: Comparison) -> list[Any]:
    return [c.task, c.metric, c.codec, c.anchor, f"{c.scale:g}"]


def write_tables(report: InspectReport, output: Path) -> None:
    """``matched_rate.csv`` and ``drivers.csv`` into ``output``."""
    head = ["task", "metric", "codec", "anchor", "scale"]
    report.files["matched_rate"] = output / "matched_rate.csv"
    _write_csv(report.files["matched_rate"], [*head, "image_id", "quality", "bpp", "score", "anchor_score_at_bpp",
                                              "delta"],
               [[*_cmp_cells(r.comparison), r.image_id, r.point.quality, _num(r.point.bpp, 6), _num(r.point.score),
                 _num(r.anchor_score), _num(r.delta)] for r in report.matched])
    report.files["drivers"] = output / "drivers.csv"
    _write_csv(report.files["drivers"], [*head, "rank", "image_id", "matched_points", "mean_delta", "contribution",
                                         "worst_quality", "worst_bpp", "worst_delta"],
               [[*_cmp_cells(d.comparison), rank, d.image_id, d.matched, _num(d.mean_delta), _num(d.contribution),
                 d.worst.point.quality, _num(d.worst.point.bpp, 6), _num(d.worst.delta)]
                for rank, d in _ranked(report.drivers)])


def _ranked(items: list[Driver]) -> list[tuple[int, Driver]]:
    """(rank within its comparison, driver), in the order given."""
    seen: dict[Comparison, int] = defaultdict(int)
    out = []
    for d in items:
        seen[d.comparison] += 1
        out.append((seen[d.comparison], d))
    return out


def inspect_run(folder: str | Path, anchors: Sequence[str] | None = None, worst: int = 4,
                score_threshold: float = 0.3, output: str | Path | None = None) -> InspectReport:
    """Analyse the run in ``folder`` per image and write the tables and the gallery into ``output``
    (default ``folder/inspect``); see the module docstring.

    ``anchors``: codec labels to compare against (default: the config's ``anchors``); ``worst``:
    gallery images per comparison; ``score_threshold``: detections drawn from this score on.
    """
    from vcm_plugin.analysis.gallery import write_gallery
    from vcm_plugin.datasets.registry import get_dataset
    from vcm_plugin.evaluation.kinds import evaluator_for
    from vcm_plugin.results import load
    from vcm_plugin.results.tables import run_config, task_name

    folder = Path(folder)
    config = run_config(folder)
    anchors = list(anchors or config.anchors)
    if not anchors:
        raise InspectError(f"run folder {folder}: its config names no anchors; give one with --anchor LABEL "
                           f"(codecs: {', '.join(config.codecs)})")
    if unknown := [a for a in anchors if a not in config.codecs]:
        raise InspectError(f"run folder {folder}: anchor {unknown[0]!r} is not one of its codecs "
                           f"({', '.join(config.codecs)})")
    dataset = get_dataset(config.dataset.name, **config.dataset_params())
    results = load(folder, dataset=dataset)
    report = InspectReport(folder)
    samples = {str(s.image_id): s for s in dataset}
    rows_of: dict[Any, dict[str, UnitRow]] = defaultdict(dict)
    for image_row in results.images:
        rows_of[image_row.label][image_row.unit.image_id] = image_row.unit

    coded = [p for p in results.points if p.codec != REFERENCE]
    report.left_out = [point_name(p) for p in coded if not p.complete]
    if report.left_out:
        log.warning("inspect %s: %d incomplete point(s) left out (failed units): %s", folder, len(report.left_out),
                    ", ".join(report.left_out))
    curves: dict[tuple[str, str, float], dict[str, list[ImagePoint]]] = {}
    metrics: dict[str, str] = {}
    for label in config.tasks:
        evaluator = evaluator_for(dataset, task_name(config, label))
        if evaluator is None:
            report.skipped_tasks.append(f"{label} ({task_name(config, label)}: no per-image task score)")
            continue
        points = [p for p in coded if p.task == label and p.complete]
        for p in tqdm(points, desc=f"per-image {label}", unit="point", leave=False):
            rows = {i: r for i, r in rows_of[p.label].items() if r.status == "ok"}
            if any(r.predictions is None for r in rows.values()):
                raise InspectError(f"run folder {folder}: the units of {point_name(p)} hold no per-image predictions "
                                   "(rerun `vcm run` on it to store them)")
            metrics[label] = p.primary_name
            curve = curves.setdefault((label, p.codec, p.scale), {})
            for image_id, score in image_scores(p, rows, samples, evaluator).items():
                row = rows[image_id]
                curve.setdefault(image_id, []).append(ImagePoint(p.quality, row.bits / row.pixels, score))
    if not curves:
        why = "; ".join(report.skipped_tasks) or "no complete coded point"
        raise InspectError(f"run folder {folder} has no per-image task scores to inspect ({why})")

    for (task, codec, scale), curve in sorted(curves.items()):
        for anchor in anchors:
            if codec == anchor:
                continue
            anchor_scale = scale if (task, anchor, scale) in curves else 1.0
            if (task, anchor, anchor_scale) not in curves:
                log.warning("inspect %s: no complete %s points of anchor %s; %s not compared", folder, task, anchor,
                            codec)
                continue
            comparison = Comparison(task, metrics[task], codec, anchor, scale, anchor_scale)
            matched = matched_rows(comparison, curve, curves[(task, anchor, anchor_scale)])
            report.matched += matched
            report.drivers += drivers(matched, len(curve))

    out = Path(output) if output is not None else folder / OUTPUT
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InspectError(f"cannot create the inspect folder {out}: {exc.strerror or exc}") from exc
    write_tables(report, out)
    report.files.update(write_gallery(report, config, dataset, curves, rows_of, out, worst, score_threshold))
    return report
