"""Reports of a run, computed from its results (:func:`vcm_plugin.results.load`) alone.

- ``results.csv``: one row per (task, codec, quality, scale): images, failures, bpp
  (total bits / total ORIGINAL pixels, as the VCM anchors compute it), ``mean_bpp``
  (mean of per-image bpp), ``estimated_bpp`` (learned codecs only: their entropy model's likelihood
  estimate over the same pixels, beside the real rate so the gap shows; empty for other codecs),
  ``rate_mode`` (``full``: every stream holds all a decoder needs; ``side-info-out-of-rate``: the
  codec's mode, e.g. fcm-vvc ``mode: ctc``, sent ``side_info_bits`` out of band, left out of
  ``bits``; the BD-rate note says so too),
  the task metrics, one column per registered image metric
  (PSNR-Y / PSNR-RGB: mean over images, dB; MS-SSIM: mean over the images where it is
  defined) and mean seconds per image, so human-vision and machine-vision curves come from
  one run. Every number is :func:`vcm_plugin.results.aggregate`'s.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcm_plugin.config import RunConfig
from vcm_plugin.datasets.base import Dataset
from vcm_plugin.errors import VcmError
from vcm_plugin.images.metrics import IMAGE_METRICS
from vcm_plugin.reports.intervals import METHOD as CI_METHOD
from vcm_plugin.reports.intervals import Draws, Interval
from vcm_plugin.results import REFERENCE, Point, PointLabel, load


class ReportError(VcmError, RuntimeError):
    """A report file cannot be written (full disk, permissions); names the folder and the file."""


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


def _write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_results_csv(points: list[Point], path: Path, skipped: int = 0) -> None:
    """One row per point; ``skipped``: images the dataset left out (missing files), in every row."""
    fixed = ["task", "codec", "quality", "scale", "images", "failed", "images_skipped", "bits", "pixels", "bpp",
             "estimated_bpp", "mean_bpp", "rate_mode", "side_info_bits"]
    metric_names = sorted({k for p in points for k in p.metrics} - set(fixed))  # e.g. an evaluator's "images"
    header = [*fixed,
              *metric_names, *IMAGE_METRICS, "encode_s_per_image", "decode_s_per_image", "inference_s_per_image"]
    _write_csv(path, header, ([p.task, p.codec, _quality(p.quality), _fmt(p.scale, 2), p.images, p.failed, skipped,
                               _fmt(p.bits), p.pixels, _fmt(p.bpp, 6), _fmt(p.estimated_bpp, 6), _fmt(p.mean_bpp, 6),
                               rate_mode(p),
                               _fmt(p.side_info_bits),
                               *[_fmt(p.metrics.get(m)) for m in metric_names],
                               *[_fmt(p.image_metrics.get(m), d.digits) for m, d in IMAGE_METRICS.items()],
                               _fmt(p.encode_s), _fmt(p.decode_s), _fmt(p.inference_s)] for p in points))


def rate_mode(point: Point) -> str:
    """``full`` when every stream of ``point`` holds all a decoder needs, ``side-info-out-of-rate`` when its codec's
    mode sent side information out of band (fcm-vvc ``mode: ctc``); empty for the reference."""
    if point.side_info_bits is None:
        return ""
    return "side-info-out-of-rate" if point.side_info_bits else "full"


def side_info_note(points: list[Point]) -> str:
    """What ``points`` (one codec's curve) left out of their rate, per image, or ''."""
    left_out = [p for p in points if p.side_info_bits]
    if not left_out:
        return ""
    per_image = sum(p.side_info_bits for p in left_out) / 8 / sum(p.images - p.failed for p in left_out)
    return (f"rate excludes {per_image:.0f} bytes/image of out-of-band side information "
            f"({len(left_out)} of {len(points)} points; rate_mode side-info-out-of-rate)")


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
    interval: Interval | None = None  # the paired image-bootstrap 95 % interval (None: bootstrap off)
    seed: int = 0
    proposal: tuple[str, list[float | int]] | None = None  # n/a for overlap: (codec label, qualities to add)

    def interval_text(self, digits: int = 2) -> str:
        """``[-5.10, -1.02]`` (or '' without an interval)."""
        i = self.interval
        return "" if i is None or i.low is None else f"[{i.low:+.{digits}f}, {i.high:+.{digits}f}]"


def _add_note(row: BDRow, note: str) -> None:
    row.note = "; ".join(filter(None, [row.note, note]))


def _fill_bd(row: BDRow, config: RunConfig, anchor: tuple[list[float], list[float]], test: list[Point],
             draws: Draws | None = None, anchor_points: list[Point] | None = None) -> BDRow:
    """``row.bd_rate`` of the points ``test`` against the ``anchor`` curve (rates, metric values; its points
    ``anchor_points``, None for a published anchor) with its bootstrap interval from ``draws``; the note names
    the points the monotone envelope dropped, or why there is no value (and, for too little overlap, the
    qualities to add)."""
    from vcm_plugin.evaluation.bd import BDOverlapError, bd_rate_report
    from vcm_plugin.reports.intervals import bd_interval
    from vcm_plugin.reports.overlap import propose

    try:
        report = bd_rate_report(*anchor, [p.bpp for p in test], [p.primary for p in test], method=config.bd_method,
                                non_monotonic=config.non_monotonic, anchor_name=row.anchor, test_name=row.codec)
        row.bd_rate = report.value
        dropped = [f"{row.anchor} bpp {d.rate:.4f}" for d in report.anchor_dropped]
        dropped += [f"{row.codec} bpp {d.rate:.4f}" for d in report.test_dropped]
        _add_note(row, "monotone envelope dropped " + ", ".join(dropped) if dropped else "")
    except BDOverlapError as exc:
        _add_note(row, f"n/a: {exc}")
        row.proposal = propose(config, row.anchor, anchor_points, row.codec, test, anchor)
        if row.proposal:
            label, qualities = row.proposal
            _add_note(row, f"to reach the overlap add qualities {', '.join(map(_quality, qualities))} to {label} "
                           f"(estimated from its measured bpp-quality relation; `vcm run CONFIG --fill-overlap` "
                           "runs them)")
        return row
    except VcmError as exc:
        _add_note(row, f"n/a: {exc}")
        return row
    row.seed = draws.seed if draws is not None else 0
    row.interval = bd_interval(draws, anchor_points, test, config.bd_method, config.non_monotonic)
    if row.interval is not None:
        _add_note(row, row.interval.note)
    return row


def bd_rows(config: RunConfig, points: list[Point], draws: Draws | None = None) -> list[BDRow]:
    """BD-rate of every codec against every anchor, per task and scale (intervals from ``draws``)."""
    rows = []
    for task in sorted({p.task for p in points}):
        for anchor in config.anchors:
            for codec in (c for c in config.codecs if c != anchor):
                for scale in config.codecs[codec].scales:
                    a = [p for p in points if p.task == task and p.codec == anchor and p.scale == scale]
                    fallback = not a and scale != 1.0
                    if fallback:  # the anchor was not run at this scale: compare with it at full size
                        a = [p for p in points if p.task == task and p.codec == anchor and p.scale == 1.0]
                    t = [p for p in points if p.task == task and p.codec == codec and p.scale == scale]
                    row = BDRow(task, (a or t)[0].primary_name if (a or t) else "", codec, anchor, scale, None,
                                config.bd_method)
                    if fallback:
                        row.note = f"against {anchor} at scale 1 (no {anchor} points at scale {scale:g})"
                    _add_note(row, side_info_note(t))
                    incomplete = [f"{p.codec} q {p.quality}" for p in a + t if not p.complete]
                    if incomplete:
                        _add_note(row, "incomplete points left out: " + ", ".join(incomplete))
                    a = [p for p in a if p.complete]
                    rows.append(_fill_bd(row, config, ([p.bpp for p in a], [p.primary for p in a]),
                                         [p for p in t if p.complete], draws, a))
        rows += _published_rows(config, points, task, draws)
    return rows


def _published_rows(config: RunConfig, points: list[Point], task: str, draws: Draws | None = None) -> list[BDRow]:
    """BD-rate of every codec against each published anchor with this task's metric."""
    from vcm_plugin.anchors import load_published_anchor

    rows = []
    metric = next((p.primary_name for p in points if p.task == task), "")
    model, params = config.task_params(task)
    run_model = f"{model} {params.get('weights', params.get('architecture', ''))}".strip()
    for anchor in map(load_published_anchor, config.published_anchors):
        if anchor.metric != metric:
            continue
        for codec in config.codecs:
            t = [p for p in points if p.task == task and p.codec == codec and p.scale == anchor.scale and p.complete]
            row = BDRow(task, metric, codec, f"published:{anchor.name}", anchor.scale, None, config.bd_method,
                        note=f"published anchor, task model {anchor.task_model}; this run: {run_model}")
            _add_note(row, side_info_note(t))
            rows.append(_fill_bd(row, config, (list(anchor.rate), list(anchor.values)), t, draws))
    return rows


def skipped_sentence(skipped: list[str]) -> str:
    """One sentence on the images the dataset skipped (empty when none)."""
    if not skipped:
        return ""
    first = ", ".join(skipped[:_MAX_SKIPPED_LISTED]) + (", ..." if len(skipped) > _MAX_SKIPPED_LISTED else "")
    return (f"{len(skipped)} image(s) listed by the dataset were skipped because their files are missing "
            f"(dataset.missing: skip), ids {first}; every metric is over the remaining images.")


_MAX_SKIPPED_LISTED = 10


def write_bd(rows: list[BDRow], csv_path: Path, md_path: Path, points: list[Point],
             skipped: list[str] | None = None) -> None:
    _write_csv(csv_path, ["task", "metric", "codec", "anchor", "scale", "bd_rate_percent", "method", "ci_low",
                          "ci_high", "ci_method", "bootstrap_b", "bootstrap_failed", "bootstrap_seed", "differs_95",
                          "note"],
               ([r.task, r.metric, r.codec, r.anchor, _fmt(r.scale, 2), _fmt(r.bd_rate, 3), r.method,
                 *_interval_columns(r), r.note] for r in rows))
    lines = ["# BD-rate per task", "",
             "Negative = fewer bits than the anchor for the same task metric. "
             "Rate: total bits / total original pixels.", ""]
    boot = next((r for r in rows if r.interval is not None), None)
    if boot is not None:
        lines += [f"Intervals: 95 % {CI_METHOD} bootstrap over images, paired (the same B = "
                  f"{boot.interval.n_boot} resamples, seed {boot.seed}, for a codec and its anchor; every point's "
                  "rate and metric recomputed per resample); 'differs' = the interval excludes 0.", ""]
    if skipped:
        lines += [skipped_sentence(skipped), ""]
    for task in sorted({r.task for r in rows}):
        task_rows = [r for r in rows if r.task == task]
        ref = [p for p in points if p.task == task and p.codec == REFERENCE and p.complete]
        lines.append(f"## {task} ({task_rows[0].metric}, {task_rows[0].method})")
        if ref:
            lines.append(f"Uncompressed reference: {task_rows[0].metric} = {ref[0].primary:.2f}")
        lines += ["", "| codec | anchor | scale | BD-rate [95 % CI] | differs | note |",
                  "|---|---|---|---|---|---|"]
        for r in task_rows:
            value = f"{r.bd_rate:+.2f} % {r.interval_text()}".strip() if r.bd_rate is not None else "n/a"
            lines.append(f"| {r.codec} | {r.anchor} | {r.scale:g} | {value} | {_differs(r)} | {r.note} |")
        lines.append("")
    failures = [(p, e) for p in points for e in p.errors]
    if failures:
        lines += ["## Failures", "", f"{len(failures)} failed unit(s); all are in failures.csv. First ones:", ""]
        lines += [f"- {e}" for _, e in failures[:20]]
    md_path.write_text("\n".join(lines) + "\n")


def _differs(row: BDRow) -> str:
    """``yes`` / ``no``: whether the codec differs from its anchor at 95 %; '' without an interval."""
    significant = row.interval.significant if row.interval is not None else None
    return "" if significant is None else ("yes" if significant else "no")


def _interval_columns(row: BDRow) -> list[str]:
    """ci_low, ci_high, ci_method, bootstrap_b, bootstrap_failed, bootstrap_seed, differs_95 of ``row``."""
    i = row.interval
    if i is None:
        return [""] * 7
    has = i.low is not None
    return [_fmt(i.low, 3), _fmt(i.high, 3), CI_METHOD if has else "", str(i.n_boot), str(i.failed),
            str(row.seed), _differs(row)]


def write_failures(points: list[Point], path: Path) -> None:
    _write_csv(path, ["task", "codec", "quality", "scale", "error"],
               ([p.task, p.codec, _quality(p.quality), _fmt(p.scale, 2), e] for p in points for e in p.errors))


def format_bd_table(rows: list[BDRow]) -> str:
    """The BD-rate rows as a plain-text table; columns as wide as their longest entry."""
    tw = max([4, *(len(r.task) for r in rows)]) + 2
    cw = max([5, *(len(r.codec) for r in rows)]) + 2
    aw = max([6, *(len(r.anchor) for r in rows)]) + 2
    iw = max([0, *(len(r.interval_text()) for r in rows)])
    ci = f"  {'95 % CI':<{iw}}" if iw else ""
    out = [f"{'task':<{tw}}{'codec':<{cw}}{'anchor':<{aw}}{'scale':>6}{'BD-rate':>11}{ci}  note"]
    for r in rows:
        value = f"{r.bd_rate:+9.2f} %" if r.bd_rate is not None else "      n/a"
        interval = f"  {r.interval_text():<{iw}}" if iw else ""
        out.append(f"{r.task:<{tw}}{r.codec:<{cw}}{r.anchor:<{aw}}{r.scale:>6g}{value:>11}{interval}  {r.note}")
    boot = next((r for r in rows if r.interval is not None and r.interval.low is not None), None)
    if boot is not None:
        out.append(f"(95 % {CI_METHOD} intervals: paired bootstrap over images, B = {boot.interval.n_boot}, "
                   f"seed {boot.seed})")
    return "\n".join(out)


def write_reports(config: RunConfig, dataset: Dataset, folder: Path, log: Callable[[str], None] | None = print,
                  known: dict[PointLabel, Point] | None = None) -> dict[str, Path]:
    """Write every report of the run in ``folder`` (``known``: points already aggregated); return their paths."""
    from vcm_plugin.reports.intervals import draw_points
    from vcm_plugin.reports.plots import plot_rd

    points = load(folder, dataset=dataset, known=known).points
    paths = {"results": folder / "results.csv", "bd_rate_csv": folder / "bd_rate.csv",
             "bd_rate_md": folder / "bd_rate.md", "failures": folder / "failures.csv"}
    draws = draw_points(points, config.report.bootstrap, config.report.seed, quiet=log is None)
    rows = bd_rows(config, points, draws)
    skipped = [str(i) for i in getattr(dataset, "skipped_ids", None) or []]
    try:
        write_results_csv(points, paths["results"], skipped=len(skipped))
        write_bd(rows, paths["bd_rate_csv"], paths["bd_rate_md"], points, skipped=skipped)
        write_failures(points, paths["failures"])
        for task in sorted({p.task for p in points}):
            paths[f"rd_{task}"] = plot_rd([p for p in points if p.task == task], config.anchors, task,
                                          folder / f"rd_{task}.png", dataset_name=config.name,
                                          published=config.published_anchors, draws=draws)
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
