"""Codec comparisons on image files through the harness (``vcm compare``, ``benchmarks/codecs.py``).

Each codec configuration at each quality is a point of a :func:`~vcm_plugin.pipeline.run.run` grid
over the image files (dataset ``image-files``, defined here) scored by the ``image-quality`` task, so
units are cached in the output folder's results store (a rerun into the same folder recomputes only what is missing),
run by the harness's executors, and aggregated by :func:`vcm_plugin.results.aggregate`: ``bpp`` is
total bits / total ORIGINAL pixels, ``mean_bpp`` beside it, PSNR-Y / PSNR-RGB means of per-image dB,
MS-SSIM the mean where defined; times are wall seconds of ``encode`` / ``decode`` (ffmpeg codecs
include the process start), reported per megapixel.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcm_plugin.codecs.base import Quality
from vcm_plugin.datasets.base import DatasetError, IndexedDataset, Sample, image_size
from vcm_plugin.datasets.registry import register_dataset
from vcm_plugin.images.metrics import IMAGE_METRICS
from vcm_plugin.results import REFERENCE, Point, load


@register_dataset
class ImageFiles(IndexedDataset):
    """The image files ``paths``, in order (ids: the paths as given); no annotations, so only the
    image-quality task scores them. Sizes in pixels come from the file headers."""

    name = "image-files"

    def __init__(self, paths: list[str]) -> None:
        if not paths:
            raise DatasetError(f"{self.name} dataset: no image files")
        self.image_ids = list(dict.fromkeys(str(p) for p in paths))

    def __getitem__(self, index: int) -> Sample:
        path = self.image_ids[index]
        return Sample(path, Path(path), *image_size(Path(path), path))

    def evaluator(self, task: str) -> Any:
        raise DatasetError(f"{self.name} dataset: image files without annotations score no task ({task!r})")


@dataclass(frozen=True)
class CodecSpec:
    """A codec configuration and the qualities to code at."""

    name: str
    qualities: tuple[Quality, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Display name: the codec name plus any non-default parameters."""
        if not self.params:
            return self.name
        return self.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(self.params.items())) + "]"


def measure(specs: Sequence[CodecSpec], images: Sequence[str | Path], output: str | Path | None = None,
            jobs: int | None = None, progress: bool = True) -> list[Point]:
    """Code every image with every codec configuration at every quality; the points in spec order.

    ``output``: the run folder (results store, ``results.csv``, ...) that a later call reuses;
    None: a temporary folder, removed afterwards. ``jobs``: worker processes (default: all
    cores). A failed unit (a codec error) raises the harness's error naming the codec and image.
    """
    from vcm_plugin.config import config_from_dict
    from vcm_plugin.pipeline.run import RunError, run

    codecs = {s.label: {"codec": s.name, "qualities": list(s.qualities), **s.params} for s in specs}
    dataset = {"name": ImageFiles.name, "paths": [str(p) for p in images]}
    config = config_from_dict({"name": "compare", "dataset": dataset, "tasks": {"image-quality": {}}, "codecs": codecs},
                              source="the compared codecs")
    with contextlib.ExitStack() as stack:
        folder = output or stack.enter_context(tempfile.TemporaryDirectory(prefix="vcm-compare-"))
        run(config, folder, jobs=jobs, quiet=not progress, log=lambda _: None)
        points = [p for p in load(folder).points if p.codec != REFERENCE]
    failed = [e for p in points for e in p.errors] or [f"{p.codec} q {p.quality}: incomplete" for p in points
                                                        if not p.complete]
    if failed:
        raise RunError(f"{len(failed)} unit(s) failed; first: {failed[0]}")
    order = {key: k for k, key in enumerate((s.label, q) for s in specs for q in s.qualities)}
    return sorted(points, key=lambda p: order.get((p.codec, p.quality), len(order)))


def ms_per_megapixel(point: Point, seconds_per_image: float | None) -> float:
    """Summed wall time of a point's images per megapixel, in milliseconds."""
    return 1e3 * (seconds_per_image or 0.0) * (point.images - point.failed) / (point.pixels / 1e6)


def point_row(point: Point) -> dict[str, Any]:
    """A compared point as a CSV row: rate, every image metric, ms per megapixel to encode and decode."""
    return {"codec": point.codec, "quality": point.quality, "images": point.images, "bits": point.bits,
            "pixels": point.pixels, "bpp": point.bpp, "mean_bpp": point.mean_bpp,
            **{name: point.image_metrics.get(name) for name in IMAGE_METRICS},
            "encode_ms_per_mp": ms_per_megapixel(point, point.encode_s),
            "decode_ms_per_mp": ms_per_megapixel(point, point.decode_s)}
