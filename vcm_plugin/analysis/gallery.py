"""The gallery of ``vcm inspect``: the worst images of each codec-vs-anchor comparison, side by side.

For each comparison (:class:`~vcm_plugin.analysis.inspect.Comparison`) the ``worst`` images by mean
matched-rate delta are shown as one PNG: the image coded again by the codec at the point where
it loses most against the anchor, and by the anchor at its point nearest in rate, each with
the task model's STORED predictions of that unit drawn on it (detections: boxes from
``score_threshold`` on, with category names, instance masks when stored, through
``torchvision.utils.draw_bounding_boxes`` / ``draw_segmentation_masks``; classification: the
top-5 classes in the caption). Coding again is what the harness does
(:func:`vcm_plugin.pipeline.units.run_job`): pre-scale, encode, decode, resize back to the
original size. A feature codec's decoded value is not a picture: its panel shows the original
image with the predictions made from the decoded features. ``index.html`` lists every case.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vcm_plugin.analysis.inspect import Comparison, Driver, ImagePoint, InspectError, InspectReport
from vcm_plugin.results import PointLabel

GALLERY = "gallery"


def decoded_image(config: Any, codec_label: str, quality: float | int, scale: float,
                  image: np.ndarray) -> np.ndarray | None:
    """``image`` coded by the config's codec ``codec_label`` at ``quality`` and ``scale``, at the original size;
    None for a feature codec (its decoded value is a cut-point tensor, not a picture)."""
    from vcm_plugin.codecs.registry import get_codec, get_codec_class
    from vcm_plugin.images.resize import prescale, resize_rgb
    from vcm_plugin.weights import with_search_path

    name, params = config.codec_params(codec_label)
    codec = get_codec(name, **with_search_path(get_codec_class(name), params, config.weights.search_path))
    if codec.output_point != "input":
        return None
    decoded = codec.decode(codec.encode(prescale(image, scale), quality))
    return resize_rgb(decoded, image.shape[0], image.shape[1])


def label_namer(dataset: Any) -> Callable[[int], str]:
    """Category id / class index -> name: the dataset's categories or class names, else COCO's, else the number."""
    from vcm_plugin.tasks.coco_names import COCO80

    names: dict[int, str] = dict(COCO80)
    categories = getattr(dataset, "categories", None)
    if isinstance(categories, dict):
        names = {int(k): str(v) for k, v in categories.items()}
    class_names = getattr(dataset, "class_names", None)
    if class_names:
        names = dict(enumerate(map(str, class_names)))
    return lambda label: names.get(int(label), str(int(label)))


def _color(label: int) -> tuple[int, int, int]:
    from matplotlib import colormaps

    r, g, b, _ = colormaps["tab20"](int(label) % 20)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_predictions(image: np.ndarray, record: dict[str, Any] | None, name: Callable[[int], str],
                     score_threshold: float) -> tuple[np.ndarray, str]:
    """``image`` with the stored predictions ``record`` drawn on it, and a one-line caption."""
    import torch
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    from vcm_plugin.tasks.predictions import ClassScores, Detections, predictions_from_json

    if record is None:
        return image, "no predictions stored"
    predictions = predictions_from_json(record)
    if isinstance(predictions, ClassScores):
        top = np.argsort(-predictions.probs)[:5]
        return image, "top-5: " + ", ".join(f"{name(int(k))} {predictions.probs[k]:.2f}" for k in top)
    if not isinstance(predictions, Detections):
        return image, ""
    keep = np.flatnonzero(predictions.scores >= score_threshold)
    caption = f"{len(keep)} of {len(predictions)} detections with score >= {score_threshold:g}"
    if not len(keep):
        return image, caption
    canvas = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    colors = [_color(predictions.labels[k]) for k in keep]
    if predictions.masks is not None:
        from pycocotools import mask as mask_utils

        rles = [{"size": list(predictions.masks[k]["size"]), "counts": str(predictions.masks[k]["counts"]).encode()}
                for k in keep]
        masks = torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1).bool()
        canvas = draw_segmentation_masks(canvas, masks, alpha=0.45, colors=colors)
    labels = [f"{name(predictions.labels[k])} {predictions.scores[k]:.2f}" for k in keep]
    from matplotlib import font_manager

    size = max(image.shape[:2])
    canvas = draw_bounding_boxes(canvas, torch.from_numpy(predictions.boxes[keep]), labels=labels, colors=colors,
                                 width=max(2, round(size / 300)), font=font_manager.findfont("DejaVu Sans"),
                                 font_size=max(12, round(size / 40)))
    return canvas.permute(1, 2, 0).numpy(), caption


def _nearest(points: list[ImagePoint], bpp: float) -> ImagePoint:
    return min(points, key=lambda p: abs(math.log10(p.bpp) - math.log10(bpp)))


def _panel(ax: Any, image: np.ndarray, title: str) -> None:
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def render_case(path: Path, original: np.ndarray, panels: list[tuple[np.ndarray, str]], title: str) -> None:
    """One PNG: the ``panels`` (image, title) side by side under ``title``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = original.shape[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 6 * height / width + 1.2))
    for ax, (image, text) in zip(np.atleast_1d(axes), panels):
        _panel(ax, image, text)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise InspectError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)


def write_gallery(report: InspectReport, config: Any, dataset: Any, curves: dict[tuple[str, str, float], Any],
                  rows_of: dict[PointLabel, dict[str, Any]], output: Path, worst: int,
                  score_threshold: float) -> dict[str, Path]:
    """The PNGs of the ``worst`` images of every comparison and ``index.html``, in ``output/gallery``."""
    folder = output / GALLERY
    folder.mkdir(parents=True, exist_ok=True)
    samples = {str(s.image_id): s for s in dataset}
    name = label_namer(dataset)
    cases: dict[Comparison, list[Driver]] = {}
    for d in report.drivers:  # already ranked, most negative mean delta first
        if len(cases.setdefault(d.comparison, [])) < worst:
            cases[d.comparison].append(d)
    entries: list[tuple[Comparison, Driver, str, str]] = []
    cache: dict[tuple, np.ndarray | None] = {}
    for comparison, chosen in tqdm(cases.items(), desc="gallery", unit="comparison", leave=False):
        for d in chosen:
            sample = samples[d.image_id]
            original = sample.load()
            codec_point = d.worst.point
            anchor_point = _nearest(curves[(comparison.task, comparison.anchor, comparison.anchor_scale)][d.image_id],
                                    codec_point.bpp)
            panels = []
            for codec, scale, p in ((comparison.codec, comparison.scale, codec_point),
                                    (comparison.anchor, comparison.anchor_scale, anchor_point)):
                key = (codec, p.quality, scale, d.image_id)
                if key not in cache:
                    cache[key] = decoded_image(config, codec, p.quality, scale, original)
                shown = cache[key]
                note = "" if shown is not None else " (feature codec: original image shown)"
                record = rows_of[PointLabel(comparison.task, codec, p.quality, scale)][d.image_id].predictions
                drawn, caption = draw_predictions(original if shown is None else shown, record, name,
                                                  score_threshold)
                panels.append((drawn, f"{codec} q {p.quality}: {p.bpp:.4f} bpp, {comparison.metric} "
                                      f"{p.score:.1f}{note}\n{caption}"))
            stem = f"{comparison.task}_{comparison.codec}_vs_{comparison.anchor}_s{comparison.scale:g}_{d.image_id}"
            render_case(folder / f"{stem}.png", original, panels,
                        f"image {d.image_id}: {comparison.codec} vs {comparison.anchor}, mean {comparison.metric} "
                        f"delta at matched rate {d.mean_delta:+.2f} over {d.matched} point(s)")
            entries.append((comparison, d, f"{GALLERY}/{stem}.png", panels[0][1] + " | " + panels[1][1]))
    index = output / "index.html"
    _write_index(index, report, entries)
    return {"index": index}


def _write_index(path: Path, report: InspectReport, entries: list[tuple[Comparison, Driver, str, str]]) -> None:
    e = html.escape
    lines = ["<!doctype html>", "<meta charset='utf-8'>", f"<title>vcm inspect {e(str(report.folder))}</title>",
             "<style>body{font-family:sans-serif;margin:2em} img{max-width:100%} figure{margin:1em 0 2em}</style>",
             f"<h1>Per-image analysis of {e(str(report.folder))}</h1>",
             "<p>Images ranked by their mean task-metric difference codec - anchor at matched rate (log-bpp linear "
             "interpolation of each image's curve), most negative first: <a href='drivers.csv'>drivers.csv</a>; "
             "every matched point: <a href='matched_rate.csv'>matched_rate.csv</a>.</p>"]
    if report.left_out:
        lines.append(f"<p>Incomplete points left out (failed units): {e(', '.join(report.left_out))}</p>")
    if report.skipped_tasks:
        lines.append(f"<p>Tasks without per-image scores: {e(', '.join(report.skipped_tasks))}</p>")
    current = None
    for comparison, d, src, caption in entries:
        if comparison != current:
            current = comparison
            lines.append(f"<h2>{e(comparison.task)}: {e(comparison.codec)} vs {e(comparison.anchor)} "
                         f"(scale {comparison.scale:g}, {e(comparison.metric)})</h2>")
        lines.append(f"<figure><img src='{e(src)}' alt='image {e(d.image_id)}'><figcaption>image {e(d.image_id)}: "
                     f"mean delta {d.mean_delta:+.2f} over {d.matched} matched point(s); {e(caption)}"
                     "</figcaption></figure>")
    try:
        path.write_text("\n".join(lines) + "\n")
    except OSError as exc:
        raise InspectError(f"cannot write {path}: {exc.strerror or exc}") from exc
