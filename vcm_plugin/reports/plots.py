"""Rate-accuracy plots (matplotlib, headless): one curve plotter for the run reports and the experiments."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vcm_plugin.results import REFERENCE, Point

#: a curve: legend label, (rate, metric) points (sorted by rate when drawn; non-finite rates left out),
#: matplotlib line keywords
Curve = tuple[str, Sequence[tuple[float, float]], dict[str, Any]]


def plot_curves(curves: Sequence[Curve], path: Path, *, xlabel: str, ylabel: str, title: str,
                reference: tuple[str, float, dict[str, Any]] | None = None, log_x: bool = False,
                legend_outside: bool = False, note: str = "", size: tuple[float, float] = (7, 5),
                dpi: int = 120, bands: dict[str, Sequence[tuple[float, float, float]]] | None = None) -> Path:
    """Draw ``curves`` (bits per pixel on x) and an optional horizontal ``reference`` line into ``path``.

    ``bands``: curve label -> (rate, low, high) points, drawn as a shaded band in the curve's colour.

    ``log_x``: logarithmic rate axis with plain-number ticks; ``legend_outside``: the legend right
    of the axes (else lower right); ``note``: small text at the bottom. Returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    for label, points, style in curves:
        pts = sorted((x, y) for x, y in points if math.isfinite(x))
        if pts:
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **{"marker": "o", **style})
            band = sorted(b for b in (bands or {}).get(label, ()) if all(map(math.isfinite, b)))
            if band:
                ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                                color=line.get_color(), alpha=0.18, linewidth=0)
    if reference is not None and math.isfinite(reference[1]):
        ax.axhline(reference[1], label=reference[0], **reference[2])
    if log_x:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 70)) if legend_outside else title,
                 fontsize=10 if legend_outside else None)
    ax.grid(True, which="both" if log_x else "major", alpha=0.3)
    if legend_outside:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.3")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_rd(points: list[Point], anchors: list[str], task: str, path: Path, dataset_name: str = "",
            published: list[str] | None = None, draws: Any = None) -> Path:
    """bpp on x, the task's primary metric on y; one curve per codec (and scale), anchors dashed,
    published anchors with the same metric dotted grey, the uncompressed reference as a line; with ``draws``
    (:class:`~vcm_plugin.reports.intervals.Draws`) each point's 95 % bootstrap band of the metric, shaded."""
    from vcm_plugin.anchors import load_published_anchor
    from vcm_plugin.reports.intervals import metric_bands

    metric = next((p.primary_name for p in points), "metric")
    by_curve: dict[tuple[str, float], list[Point]] = {}
    for p in points:
        if p.codec != REFERENCE and p.complete and p.bpp is not None:
            by_curve.setdefault((p.codec, p.scale), []).append(p)
    curves: list[Curve] = [(codec if scale == 1.0 else f"{codec} @ {scale:g}", [(p.bpp, p.primary) for p in pts],
                            {"linestyle": "--" if codec in anchors else "-", "markersize": 4})
                           for (codec, scale), pts in sorted(by_curve.items())]
    for anchor_path in published or []:
        anchor = load_published_anchor(anchor_path)
        if anchor.metric == metric:
            curves.append((f"published: {anchor.name} ({anchor.task_model.split()[0]})",
                           list(zip(anchor.rate, anchor.values)),
                           {"linestyle": ":", "color": "grey", "marker": "s", "markersize": 3}))
    ref = [p for p in points if p.codec == REFERENCE and p.complete]
    per_point = metric_bands(draws, points)
    bands = {codec if scale == 1.0 else f"{codec} @ {scale:g}": [(p.bpp, *per_point[p.label]) for p in pts
                                                                 if p.label in per_point]
             for (codec, scale), pts in by_curve.items()}
    boot = f" (shaded: 95 % bootstrap band, B = {draws.n_boot})" if per_point else ""
    return plot_curves(curves, path, xlabel="bits per pixel (of the original image)", ylabel=metric, bands=bands,
                       title=f"{task}: {metric} vs rate" + (f" ({dataset_name})" if dataset_name else "") + boot,
                       reference=(f"uncompressed ({ref[0].primary:.2f})", ref[0].primary,
                                  {"color": "black", "linestyle": ":", "linewidth": 1}) if ref else None)
