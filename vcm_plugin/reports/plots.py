"""Rate-accuracy plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vcm_plugin.reports.write import PointMetrics


def plot_rd(points: list[PointMetrics], anchors: list[str], task: str, path: Path, dataset_name: str = "",
            published: list[str] | None = None) -> Path:
    """bpp on x, the task's primary metric on y; one curve per codec (and scale), anchors dashed,
    published anchors with the same metric dotted grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vcm_plugin.results.store import REFERENCE

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    metric = next((p.primary_name for p in points), "metric")
    curves: dict[tuple[str, float], list] = {}
    for p in points:
        if p.codec != REFERENCE and p.complete and p.bpp is not None:
            curves.setdefault((p.codec, p.scale), []).append(p)
    for (codec, scale), pts in sorted(curves.items()):
        pts = sorted(pts, key=lambda p: p.bpp)
        label = codec if scale == 1.0 else f"{codec} @ {scale:g}"
        style = "--" if codec in anchors else "-"
        ax.plot([p.bpp for p in pts], [p.primary for p in pts], style, marker="o", markersize=4, label=label)
    from vcm_plugin.anchors import load_published_anchor

    for anchor_path in published or []:
        anchor = load_published_anchor(anchor_path)
        if anchor.metric == metric:
            order = sorted(range(len(anchor.rate)), key=lambda i: anchor.rate[i])
            ax.plot([anchor.rate[i] for i in order], [anchor.values[i] for i in order], ":", color="grey",
                    marker="s", markersize=3, label=f"published: {anchor.name} ({anchor.task_model.split()[0]})")
    reference = [p for p in points if p.codec == REFERENCE and p.complete]
    if reference:
        ax.axhline(reference[0].primary, color="black", linestyle=":", linewidth=1,
                   label=f"uncompressed ({reference[0].primary:.2f})")
    ax.set_xlabel("bits per pixel (of the original image)")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric} vs rate" + (f" ({dataset_name})" if dataset_name else ""))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
