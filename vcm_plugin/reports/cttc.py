"""The run's points in the layout of the MPEG FCM CTTC reporting template for image sets (CSV and XLSX).

Layout followed: the final CSV that CompressAI-Vision (the FCM reference software) makes for its
image set, OpenImages V6 (``utils/mpeg_template_format.py``, branch ``OIV6``): the per-QP
``summary.csv`` rows (``Dataset, qp, avg_bpp, end_accuracy`` and the four timings
``nn_part_1, encode, decode, nn_part_2`` in its pipeline's order), with the template's columns
inserted (``y_psnr``, ``feat_cov_plus_nn_part_1``, ``encode_total``, ``inv_conv_plus_nn_part_2``,
``dec_total``), rows sorted by dataset then ``qp`` ascending, as that script sorts them. We
follow it because it is what the CTTC spreadsheets are filled from; the pandas index column
it also writes is left out. The columns, in order (:data:`CTTC_COLUMNS`):

- ``Dataset``: the config's dataset name; ``qp``: the codec's quality parameter as configured
  (QP for VVC / HEVC / fcm-vvc, so the highest-rate point comes first; JPEG's quality, so the
  lowest-rate point comes first: the rows follow the template's ``qp`` order, not the rate);
- ``avg_bpp``: total bits / total ORIGINAL pixels (:func:`vcm_plugin.results.aggregate`'s bpp,
  the template's ``avg_bpp``); ``end_accuracy``: the task's primary metric in percent (bbox
  AP, segm AP, Open Images mAP@0.5); ``y_psnr``: mean PSNR-Y in dB for image codecs, empty for
  feature codecs (the template leaves it empty);
- timings in SECONDS SUMMED over the images of the point (the template accumulates each
  module's elapsed time over the dataset; here: the point's mean per image, from the results
  store, times its number of images):

  - ``nn_part_1``: the task model's front, image -> cut point (``TaskModel.front``: preparing
    the image and the layers up to the cut; loading weights excluded), which a split codec
    runs inside its encode and which is timed apart there (the store's ``front_s``,
    :attr:`~vcm_plugin.codecs.base.Bitstream.front_s`). Image codecs: 0 (the model runs whole
    at the decoder, in ``nn_part_2``). Feature (split) codecs (``fcm-vvc``, ``feature-learned``):
    the measured front. EMPTY where not measured: ``direct`` codecs (their encoder runs no task
    front: its resizing of the image to the model's input is part of ``encode``), and points with
    a unit stored before the front was timed (then ``encode`` still includes the front);
  - ``encode``: the codec's encode WITHOUT the front: the store's ``encode_s`` (the codec's whole
    ``encode`` call) minus ``front_s`` where the front was measured, else ``encode_s``;
  - ``decode``: the codec's decode (to a picture, or to the cut point's value);
  - ``nn_part_2``: the rest of the task model: the whole model's inference for image codecs,
    the model from the cut on for split and direct codecs;
  - ``feat_cov_plus_nn_part_1`` = ``nn_part_1`` and ``inv_conv_plus_nn_part_2`` = ``nn_part_2``
    (no feature conversion apart here); ``encode_total`` = ``nn_part_1 + encode`` (the codec's
    whole encode: the same for every codec), ``dec_total`` = ``nn_part_2 + decode``.

One file per (task, codec, pre-scale): ``cttc/<task>_<codec>.csv`` (``_scale<s>`` appended for
pre-scaled points) and the same table as ``.xlsx`` (openpyxl). Only complete points are
written; the reference point has no rate and is left out. The template covers image sets scored
with AP (the CTTC's OpenImages V6; COCO and the embedded sample use the same layout):
datasets :data:`COVERED_DATASETS`, tasks :data:`COVERED_TASKS`; anything else is refused by
:func:`check_cttc_coverage` naming what the template lacks.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vcm_plugin.config import RunConfig
from vcm_plugin.errors import VcmError
from vcm_plugin.results import REFERENCE, Point

log = logging.getLogger(__name__)

CTTC_COLUMNS = ("Dataset", "qp", "avg_bpp", "end_accuracy", "y_psnr", "nn_part_1", "feat_cov_plus_nn_part_1",
                "encode", "encode_total", "decode", "inv_conv_plus_nn_part_2", "nn_part_2", "dec_total")
COVERED_DATASETS = ("coco", "openimages", "openimages-vcm", "sample")
COVERED_TASKS = ("detection", "segmentation")
FOLDER = "cttc"


class CttcError(VcmError, ValueError):
    """A run the CTTC template does not cover (names the dataset or task it lacks)."""


def check_cttc_coverage(config: RunConfig, tasks: dict[str, str], where: str = "this run") -> None:
    """Refuse a dataset or a task outside the template; ``tasks``: task label -> task name."""
    if config.dataset.name not in COVERED_DATASETS:
        raise CttcError(f"{where}: the MPEG FCM CTTC template has no rows for dataset {config.dataset.name!r} "
                        f"(it covers image sets scored with AP: {', '.join(COVERED_DATASETS)})")
    for label, task in tasks.items():
        if task not in COVERED_TASKS:
            raise CttcError(f"{where}: the MPEG FCM CTTC template has no rows for task {task!r} (task entry "
                            f"{label!r}; it covers {', '.join(COVERED_TASKS)})")


@dataclass(frozen=True)
class CttcRow:
    """One rate point of the template; seconds are totals over the point's images (None: not measured);
    ``encode`` excludes ``nn_part_1`` (see the module docstring)."""

    dataset: str
    qp: float | int
    avg_bpp: float
    end_accuracy: float
    y_psnr: float | None
    nn_part_1: float | None
    encode: float
    decode: float
    nn_part_2: float

    def values(self) -> list[str | float | int | None]:
        """The row in :data:`CTTC_COLUMNS` order, derived columns computed."""
        front = self.nn_part_1 or 0.0
        return [self.dataset, self.qp, self.avg_bpp, self.end_accuracy, self.y_psnr, self.nn_part_1, self.nn_part_1,
                self.encode, front + self.encode, self.decode, self.nn_part_2, self.nn_part_2,
                self.nn_part_2 + self.decode]


_DIGITS = {"avg_bpp": 6}  # every other number: 4 decimals


def _text(column: str, value: str | float | int | None) -> str:
    from vcm_plugin.reports.write import _fmt, _quality

    if value is None:
        return ""
    if column == "qp":
        return _quality(value)  # type: ignore[arg-type]
    return value if isinstance(value, str) else _fmt(float(value), _DIGITS.get(column, 4))


def cttc_tables(config: RunConfig, points: Iterable[Point], split_codecs: set[str]) -> dict[str, list[CttcRow]]:
    """File stem -> the template's rows of one (task, codec label, scale), ``qp`` ascending.

    ``split_codecs``: codec labels whose decoded value enters the task model at a cut point.
    Incomplete points are left out (logged with their names).
    """
    tables: dict[str, list[CttcRow]] = {}
    for p in points:
        if p.codec == REFERENCE:
            continue
        if not p.complete or p.bpp is None:
            log.warning("CTTC report: %s %s q %s scale %g left out (%d of %d images failed)", p.task, p.codec,
                        p.quality, p.scale, p.failed, p.images)
            continue
        n = p.images
        stem = f"{p.task}_{p.codec}" + (f"_scale{p.scale:g}" if p.scale != 1.0 else "")
        split = p.codec in split_codecs
        front = p.front_s if split else 0.0  # mean per image; None: not measured (direct, older rows)
        tables.setdefault(stem, []).append(CttcRow(
            config.dataset.name, p.quality, p.bpp, p.primary, None if split else p.image_metrics.get("psnr_y"),
            None if front is None else front * n, ((p.encode_s or 0.0) - (front or 0.0)) * n,
            (p.decode_s or 0.0) * n, (p.inference_s or 0.0) * n))
    return {stem: sorted(rows, key=lambda r: (r.dataset, float(r.qp))) for stem, rows in tables.items()}


def split_codec_labels(config: RunConfig) -> set[str]:
    """Codec labels of ``config`` whose ``output_point`` is a cut point (feature codecs)."""
    from vcm_plugin.codecs.registry import get_codec, get_codec_class
    from vcm_plugin.weights import with_search_path

    labels = set()
    for label in config.codecs:
        name, params = config.codec_params(label)
        codec = get_codec(name, **with_search_path(get_codec_class(name), params, config.weights.search_path))
        if codec.output_point != "input":
            labels.add(label)
    return labels


def write_cttc_files(tables: dict[str, list[CttcRow]], folder: Path) -> dict[str, Path]:
    """``folder/<stem>.csv`` and ``folder/<stem>.xlsx`` per table; their paths by ``cttc_<stem>[_xlsx]``."""
    from openpyxl import Workbook

    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for stem, rows in tables.items():
        csv_path, xlsx_path = folder / f"{stem}.csv", folder / f"{stem}.xlsx"
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CTTC_COLUMNS)
            writer.writerows([_text(c, v) for c, v in zip(CTTC_COLUMNS, row.values())] for row in rows)
        book = Workbook()
        sheet = book.active
        sheet.title = stem[:31]  # Excel's limit on sheet names
        sheet.append(CTTC_COLUMNS)
        for row in rows:
            sheet.append(row.values())
        book.save(xlsx_path)
        paths[f"cttc_{stem}"], paths[f"cttc_{stem}_xlsx"] = csv_path, xlsx_path
    return paths


def write_cttc(config: RunConfig, points: list[Point], folder: Path, tasks: dict[str, str]) -> dict[str, Path]:
    """Check coverage, then write the template's files of ``points`` into ``folder/cttc``; their paths.

    ``tasks``: task label -> task name (``detection``, ...) of the run.
    """
    check_cttc_coverage(config, tasks, where=f"run {folder}")
    return write_cttc_files(cttc_tables(config, points, split_codec_labels(config)), folder / FOLDER)
