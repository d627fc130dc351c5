"""Reports of a run, computed from the results store alone.

- ``results.csv``: one row per (task, codec, quality, scale): images, failures, bpp
  (total bits / total ORIGINAL pixels, as the VCM anchors compute it), ``mean_bpp``
  (mean of per-image bpp), the task metrics, PSNR-Y / PSNR-RGB (mean over images, dB),
  MS-SSIM (mean over the images where it is defined) and mean seconds per image, so
  human-vision and machine-vision curves come from one run.
- ``bd_rate.csv`` / ``bd_rate.md``: per task, the BD-rate of each codec against each
  anchor on the task's primary metric (PCHIP by default); curves that needed the
  monotone envelope are marked with the points dropped.
- ``rd_<task>.png``: bpp against the primary metric, anchors dashed, the uncompressed
  reference as a horizontal line.
- ``failures.csv``: every failed unit with its error (the report is written anyway).
- Images the dataset skipped (``missing: skip``: listed but absent) are counted in the
  ``images_skipped`` column of ``results.csv`` and named (first ids) in ``bd_rate.md``.

A point with a failed image is incomplete: its metric is not computed on a partial
set, and it is left out of BD-rate (the table says so).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcm_plugin.config import RunConfig
from vcm_plugin.datasets.base import Dataset
from vcm_plugin.errors import VcmError
from vcm_plugin.results.store import REFERENCE, ResultsStore


class ReportError(VcmError, RuntimeError):
    """A report file cannot be written (full disk, permissions); names the folder and the file."""


PRIMARY_METRIC = {"detection": "bbox/AP", "segmentation": "segm/AP", "classification": "top1"}


@dataclass
class PointMetrics:
    """Aggregates of one (codec label, quality, scale, task) point."""

    codec: str
    quality: float | int | None
    scale: float
    task: str
    images: int
    failed: int
    bits: int | None
    pixels: int
    metrics: dict[str, float] = field(default_factory=dict)
    psnr_y: float | None = None
    psnr_rgb: float | None = None
    ms_ssim: float | None = None  # mean over the images where it is defined (shorter side > 160 px)
    encode_s: float | None = None
    decode_s: float | None = None
    inference_s: float | None = None
    primary_name: str = ""
    mean_bpp: float | None = None  # mean of per-image bpp
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.failed == 0 and self.images > 0

    @property
    def bpp(self) -> float | None:
        return None if self.bits is None or not self.pixels else self.bits / self.pixels

    @property
    def primary(self) -> float:
        return self.metrics.get(self.primary_name, math.nan)


def _task_kind(config: RunConfig, task: str) -> str:
    entry = config.tasks[task]
    if entry.task:
        return entry.task
    from vcm_plugin.tasks.registry import get_task_model_class

    name, _ = config.task_params(task)
    return get_task_model_class(name).task


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if all(math.isinf(v) for v in vals):
        return math.inf
    return sum(vals) / len(vals)


def point_metrics(store: ResultsStore, by_image: dict[str, str], dataset: Dataset, config: RunConfig,
                  task: str) -> PointMetrics:
    """Metrics of one point from its stored rows (streamed through the dataset's evaluator)."""
    from vcm_plugin.tasks.base import predictions_from_json

    rows = {r.image_id: r for r in store.rows(set(by_image.values()))}
    any_row = next(iter(rows.values()), None)
    kind = _task_kind(config, task)
    pm = PointMetrics(codec=any_row.codec if any_row else "?", quality=any_row.quality if any_row else None,
                      scale=any_row.scale if any_row else 1.0, task=task, images=len(by_image),
                      failed=sum(r.status == "failed" for r in rows.values()) + len(by_image) - len(rows),
                      bits=None, pixels=0, primary_name=PRIMARY_METRIC.get(kind, ""))
    pm.errors = [r.error for r in rows.values() if r.status == "failed" and r.error]
    ok = [r for r in rows.values() if r.status == "ok"]
    if ok:
        bits = [r.bits for r in ok]
        pm.bits = None if any(b is None for b in bits) else sum(bits)  # type: ignore[arg-type]
        pm.pixels = sum(r.pixels or 0 for r in ok)
        if pm.bits is not None:
            pm.mean_bpp = sum(r.bits / r.pixels for r in ok) / len(ok)  # type: ignore[operator]
        pm.psnr_y, pm.psnr_rgb = _mean([r.psnr_y for r in ok]), _mean([r.psnr_rgb for r in ok])
        pm.ms_ssim = _mean([r.ms_ssim for r in ok if r.ms_ssim is not None])
        pm.encode_s, pm.decode_s = _mean([r.encode_s for r in ok]), _mean([r.decode_s for r in ok])
        pm.inference_s = _mean([r.inference_s for r in ok])
    evaluator = dataset.evaluator(kind)
    pm.primary_name = getattr(evaluator, "primary_metric", None) or pm.primary_name
    if pm.complete:
        evaluator.reset()
        for sample in dataset:
            row = rows[str(sample.image_id)]
            evaluator.process(sample, predictions_from_json(row.predictions))  # type: ignore[arg-type]
        pm.metrics = {k: float(v) for k, v in evaluator.evaluate().items()}
    return pm


def _sorted_points(points: list[PointMetrics]) -> list[PointMetrics]:
    return sorted(points, key=lambda p: (p.task, p.codec != REFERENCE, p.codec, p.scale,
                                          p.bpp if p.bpp is not None else -1.0))


def collect(config: RunConfig, dataset: Dataset, store: ResultsStore, keys: dict[tuple, dict[str, str]],
            known: dict[tuple, PointMetrics] | None = None) -> list[PointMetrics]:
    """Metrics of every point of the grid (``known``: points already computed during the run)."""
    known = known or {}
    return _sorted_points([known.get((point, task)) or point_metrics(store, by_image, dataset, config, task)
                           for (point, task), by_image in keys.items()])


# -- writing ------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def _quality(value: float | int | None) -> str:
    """Qualities as given: 32 stays 32 (SQLite returns REAL), 0.75 stays 0.75."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def write_results_csv(points: list[PointMetrics], path: Path, skipped: int = 0) -> None:
    """One row per point; ``skipped``: images the dataset left out (missing files), in every row."""
    fixed = ["task", "codec", "quality", "scale", "images", "failed", "images_skipped", "bits", "pixels", "bpp",
             "mean_bpp"]
    metric_names = sorted({k for p in points for k in p.metrics} - set(fixed))  # e.g. an evaluator's "images"
    header = [*fixed,
              *metric_names, "psnr_y", "psnr_rgb", "ms_ssim", "encode_s_per_image", "decode_s_per_image",
              "inference_s_per_image"]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for p in points:
            writer.writerow([p.task, p.codec, _quality(p.quality), _fmt(p.scale, 2), p.images, p.failed, skipped,
                             _fmt(p.bits), p.pixels, _fmt(p.bpp, 6), _fmt(p.mean_bpp, 6),
                             *[_fmt(p.metrics.get(m)) for m in metric_names], _fmt(p.psnr_y, 3),
                             _fmt(p.psnr_rgb, 3), _fmt(p.ms_ssim, 5), _fmt(p.encode_s), _fmt(p.decode_s),
                             _fmt(p.inference_s)])


@dataclass
class BDRow:
    task: str
    metric: str
    codec: str
    anchor: str
    scale: float
    bd_rate: float | None
    method: str
    note: str = ""


def bd_rows(config: RunConfig, points: list[PointMetrics]) -> list[BDRow]:
    """BD-rate of every codec against every anchor, per task and scale."""
    from vcm_plugin.evaluation.bd import bd_rate_report

    rows = []
    tasks = sorted({p.task for p in points})
    for task in tasks:
        for anchor in config.anchors:
            for codec in config.codecs:
                if codec == anchor:
                    continue
                for scale in config.codecs[codec].scales:
                    a = [p for p in points if p.task == task and p.codec == anchor and p.scale == scale]
                    fallback = not a and scale != 1.0
                    if fallback:  # the anchor was not run at this scale: compare with it at full size
                        a = [p for p in points if p.task == task and p.codec == anchor and p.scale == 1.0]
                    t = [p for p in points if p.task == task and p.codec == codec and p.scale == scale]
                    metric = (a or t)[0].primary_name if (a or t) else ""
                    row = BDRow(task, metric, codec, anchor, scale, None, config.bd_method)
                    if fallback:
                        row.note = f"against {anchor} at scale 1 (no {anchor} points at scale {scale:g})"
                    incomplete = [f"{p.codec} q {p.quality}" for p in a + t if not p.complete]
                    if incomplete:
                        row.note = "; ".join(filter(None, [row.note, "incomplete points left out: "
                                                            + ", ".join(incomplete)]))
                    a, t = [p for p in a if p.complete], [p for p in t if p.complete]
                    try:
                        report = bd_rate_report([p.bpp for p in a], [p.primary for p in a],
                                                [p.bpp for p in t], [p.primary for p in t],
                                                method=config.bd_method, non_monotonic=config.non_monotonic,
                                                anchor_name=anchor, test_name=codec)
                        row.bd_rate = report.value
                        if report.envelope_used and (report.anchor_dropped or report.test_dropped):
                            dropped = [f"{anchor} bpp {d.rate:.4f}" for d in report.anchor_dropped]
                            dropped += [f"{codec} bpp {d.rate:.4f}" for d in report.test_dropped]
                            row.note = "; ".join(filter(None, [row.note, "monotone envelope dropped "
                                                                + ", ".join(dropped)]))
                    except VcmError as exc:
                        row.note = "; ".join(filter(None, [row.note, f"n/a: {exc}"]))
                    rows.append(row)
        rows += _published_rows(config, points, task)
    return rows


def _published_rows(config: RunConfig, points: list[PointMetrics], task: str) -> list[BDRow]:
    """BD-rate of every codec against each published anchor with this task's metric."""
    from vcm_plugin.anchors import load_published_anchor
    from vcm_plugin.evaluation.bd import bd_rate_report

    rows = []
    metric = next((p.primary_name for p in points if p.task == task), "")
    model, params = config.task_params(task)
    run_model = f"{model} {params.get('weights', params.get('architecture', ''))}".strip()
    for path in config.published_anchors:
        anchor = load_published_anchor(path)
        if anchor.metric != metric:
            continue
        label = f"published:{anchor.name}"
        for codec in config.codecs:
            t = [p for p in points if p.task == task and p.codec == codec and p.scale == anchor.scale and p.complete]
            row = BDRow(task, metric, codec, label, anchor.scale, None, config.bd_method,
                        note=f"published anchor, task model {anchor.task_model}; this run: {run_model}")
            try:
                report = bd_rate_report(list(anchor.rate), list(anchor.values), [p.bpp for p in t],
                                        [p.primary for p in t], method=config.bd_method,
                                        non_monotonic=config.non_monotonic, anchor_name=label, test_name=codec)
                row.bd_rate = report.value
                dropped = [f"{label} bpp {d.rate:.4f}" for d in report.anchor_dropped]
                dropped += [f"{codec} bpp {d.rate:.4f}" for d in report.test_dropped]
                if dropped:  # as for local anchors: the points the monotone envelope left out
                    row.note += "; monotone envelope dropped " + ", ".join(dropped)
            except VcmError as exc:
                row.note += f"; n/a: {exc}"
            rows.append(row)
    return rows


def skipped_sentence(skipped: list[str]) -> str:
    """One sentence on the images the dataset skipped (empty when none)."""
    if not skipped:
        return ""
    first = ", ".join(skipped[:_MAX_SKIPPED_LISTED]) + (", ..." if len(skipped) > _MAX_SKIPPED_LISTED else "")
    return (f"{len(skipped)} image(s) listed by the dataset were skipped because their files are missing "
            f"(dataset.missing: skip), ids {first}; every metric is over the remaining images.")


_MAX_SKIPPED_LISTED = 10


def write_bd(rows: list[BDRow], csv_path: Path, md_path: Path, points: list[PointMetrics],
             skipped: list[str] | None = None) -> None:
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["task", "metric", "codec", "anchor", "scale", "bd_rate_percent", "method", "note"])
        for r in rows:
            writer.writerow([r.task, r.metric, r.codec, r.anchor, _fmt(r.scale, 2), _fmt(r.bd_rate, 3), r.method,
                             r.note])
    lines = ["# BD-rate per task", "",
             "Negative = fewer bits than the anchor for the same task metric. "
             "Rate: total bits / total original pixels.", ""]
    if skipped:
        lines += [skipped_sentence(skipped), ""]
    for task in sorted({r.task for r in rows}):
        task_rows = [r for r in rows if r.task == task]
        ref = [p for p in points if p.task == task and p.codec == REFERENCE and p.complete]
        lines.append(f"## {task} ({task_rows[0].metric}, {task_rows[0].method})")
        if ref:
            lines.append(f"Uncompressed reference: {task_rows[0].metric} = {ref[0].primary:.2f}")
        lines += ["", "| codec | anchor | scale | BD-rate | note |", "|---|---|---|---|---|"]
        for r in task_rows:
            value = f"{r.bd_rate:+.2f} %" if r.bd_rate is not None else "n/a"
            lines.append(f"| {r.codec} | {r.anchor} | {r.scale:g} | {value} | {r.note} |")
        lines.append("")
    failures = [(p, e) for p in points for e in p.errors]
    if failures:
        lines += ["## Failures", "", f"{len(failures)} failed unit(s); all are in failures.csv. First ones:", ""]
        lines += [f"- {e}" for _, e in failures[:20]]
    md_path.write_text("\n".join(lines) + "\n")


def write_failures(points: list[PointMetrics], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["task", "codec", "quality", "scale", "error"])
        for p in points:
            for e in p.errors:
                writer.writerow([p.task, p.codec, _quality(p.quality), _fmt(p.scale, 2), e])


def format_bd_table(rows: list[BDRow]) -> str:
    """The BD-rate rows as a plain-text table; columns as wide as their longest entry."""
    tw = max([4, *(len(r.task) for r in rows)]) + 2
    cw = max([5, *(len(r.codec) for r in rows)]) + 2
    aw = max([6, *(len(r.anchor) for r in rows)]) + 2
    out = [f"{'task':<{tw}}{'codec':<{cw}}{'anchor':<{aw}}{'scale':>6}{'BD-rate':>11}  note"]
    for r in rows:
        value = f"{r.bd_rate:+9.2f} %" if r.bd_rate is not None else "      n/a"
        out.append(f"{r.task:<{tw}}{r.codec:<{cw}}{r.anchor:<{aw}}{r.scale:>6g}{value:>11}  {r.note}")
    return "\n".join(out)


def write_reports(config: RunConfig, dataset: Dataset, store: ResultsStore, keys: dict[tuple, dict[str, str]],
                  folder: Path, log: Callable[[str], None] | None = print,
                  known: dict[tuple, PointMetrics] | None = None) -> dict[str, Path]:
    """Write every report into ``folder``; return their paths by name."""
    from vcm_plugin.reports.plots import plot_rd

    points = collect(config, dataset, store, keys, known)
    paths = {"results": folder / "results.csv", "bd_rate_csv": folder / "bd_rate.csv",
             "bd_rate_md": folder / "bd_rate.md", "failures": folder / "failures.csv"}
    rows = bd_rows(config, points)
    skipped = [str(i) for i in getattr(dataset, "skipped_ids", None) or []]
    try:
        write_results_csv(points, paths["results"], skipped=len(skipped))
        write_bd(rows, paths["bd_rate_csv"], paths["bd_rate_md"], points, skipped=skipped)
        write_failures(points, paths["failures"])
        for task in sorted({p.task for p in points}):
            paths[f"rd_{task}"] = plot_rd([p for p in points if p.task == task], config.anchors, task,
                                          folder / f"rd_{task}.png", dataset_name=config.name,
                                          published=config.published_anchors)
    except OSError as exc:  # full disk, folder made read-only: the stored rows are kept, a rerun rewrites these
        what = f"{exc.filename}: " if exc.filename else ""
        raise ReportError(f"cannot write the reports into {folder}: {what}{exc.strerror or exc} (the results "
                          "store is intact; rerun to write them)") from exc
    if log is not None:
        log("\n" + format_bd_table(rows))
        if skipped:
            log(skipped_sentence(skipped))
        n_fail = sum(len(p.errors) for p in points)
        if n_fail:
            log(f"\n{n_fail} unit(s) failed; see {paths['failures']}")
    return paths
