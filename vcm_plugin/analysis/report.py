"""ρ results as ``rho.csv`` and a figure: ρ versus depth (one line per k, bootstrap CI) and t-SNE per layer."""

from __future__ import annotations

import csv
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from vcm_plugin.analysis.rho import AnalysisError


@dataclass(frozen=True)
class RhoRow:
    """One (layer, k) result: ρ (dimensionless, 0..1) with its 95 % bootstrap CI (``bootstrap`` resamples,
    ``ci_method``); ``dims`` of the features after PCA, ``raw_dims`` before; ``rho_shuffled`` the same
    estimator with the labels randomly permuted (the chance level, i.e. the plug-in bias floor)."""

    layer: str
    depth: int
    k: int
    rho: float
    ci_low: float
    ci_high: float
    n_samples: int
    dims: int
    seed: int
    raw_dims: int = 0
    bootstrap: int = 0
    estimator: str = ""
    ci_method: str = "percentile"
    rho_shuffled: float = float("nan")


CSV_COLUMNS = [f.name for f in fields(RhoRow)]


def write_rho_csv(rows: Sequence[RhoRow], path: str | Path) -> Path:
    """Write ``rows`` to ``path`` (columns :data:`CSV_COLUMNS`; floats with 6 decimals, NaN as ``nan``)."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in asdict(row).items()})
    return path


def read_rho_csv(path: str | Path) -> list[RhoRow]:
    """The rows of a ``rho.csv``; :class:`AnalysisError` naming the file when a column is missing or bad."""
    types = {f.name: f.type for f in fields(RhoRow)}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise AnalysisError(f"{path}: not a rho.csv, missing column(s) {missing}")
            rows = []
            for rec in reader:
                rows.append(RhoRow(**{c: (float(rec[c]) if types[c] == "float" else int(rec[c])
                                          if types[c] == "int" else rec[c]) for c in CSV_COLUMNS}))
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"{path}: cannot read a rho.csv: {exc}") from exc
    return rows


def balanced_subset(labels: np.ndarray, max_samples: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_samples`` samples, spread evenly over the classes (seeded)."""
    if len(labels) <= max_samples:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    # round robin over the classes: each class's first sample, then each one's second, ...
    picks = sorted((rank, c, int(m)) for c, members in enumerate(per_class) for rank, m in enumerate(members))
    return np.sort(np.asarray([m for _, _, m in picks[:max_samples]]))


def tsne_embedding(features: np.ndarray, labels: np.ndarray, max_samples: int = 300,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(2-D t-SNE of at most ``max_samples`` class-balanced samples, their labels); PCA to <= 50 dims first."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    idx = balanced_subset(np.asarray(labels), max_samples, seed)
    x = np.asarray(features, dtype=np.float32)[idx]
    n_pca = min(50, x.shape[1], len(x))
    if n_pca < x.shape[1]:
        x = PCA(n_components=n_pca, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
               learning_rate="auto").fit_transform(x.astype(np.float64))
    return emb, np.asarray(labels)[idx]


def plot_rho(rows: Sequence[RhoRow], path: str | Path, tsne: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
             class_names: Sequence[str] | None = None, title: str = "") -> Path:
    """ρ versus depth (one line per k, 95 % bootstrap CI as a band and error bars), plus one t-SNE panel
    per layer in ``tsne`` ({layer: (embedding, labels)}) coloured by class; written as PNG (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tsne = tsne or {}
    n_panels = len(tsne)
    cols = min(4, max(1, n_panels))
    tsne_rows = math.ceil(n_panels / cols) if n_panels else 0
    fig = plt.figure(figsize=(4.2 * max(cols, 3), 4.6 + 4.0 * tsne_rows), dpi=110)
    grid = fig.add_gridspec(1 + tsne_rows, cols, height_ratios=[1.15] + [1.0] * tsne_rows, hspace=0.42,
                            wspace=0.25)
    ax = fig.add_subplot(grid[0, :])
    layers = sorted({(r.depth, r.layer) for r in rows})
    for k in sorted({r.k for r in rows}):
        pts = sorted((r for r in rows if r.k == k), key=lambda r: r.depth)
        d = np.array([r.depth for r in pts])
        rho = np.array([r.rho for r in pts])
        low = np.array([r.ci_low for r in pts])
        high = np.array([r.ci_high for r in pts])
        line, = ax.plot(d, rho, marker="o", linewidth=2, label=f"k = {k}")
        chance = np.array([r.rho_shuffled for r in pts])
        if np.isfinite(chance).any():
            ax.plot(d, chance, linestyle=":", linewidth=1.5, color=line.get_color(),
                    label=f"k = {k}, labels shuffled (chance)")
        if np.isfinite(low).any():
            ax.fill_between(d, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
            ax.errorbar(d, rho, yerr=[np.clip(rho - low, 0, None), np.clip(high - rho, 0, None)], fmt="none",
                        ecolor=line.get_color(), capsize=3, linewidth=1)
    ax.set_xticks([d for d, _ in layers], [f"{name}\n({d})" for d, name in layers], fontsize=11)
    ax.set_xlabel("layer (depth index)", fontsize=12)
    ax.set_ylabel("task appropriateness ρ (0..1)", fontsize=12)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.tick_params(axis="y", labelsize=11)
    ax.legend(title="quantiser levels", fontsize=10, title_fontsize=11, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or "ρ_k(L) = I(Q_k(Y_L); T) / min(H(T), log2 k) (95 % bootstrap CI)", fontsize=13)

    cmap = plt.get_cmap("tab10" if len(class_names or []) <= 10 else "tab20")
    handles = []
    for i, (layer, (emb, labels)) in enumerate(tsne.items()):
        tax = fig.add_subplot(grid[1 + i // cols, i % cols])
        for c in np.unique(labels):
            m = labels == c
            name = class_names[int(c)] if class_names and int(c) < len(class_names) else str(c)
            h = tax.scatter(emb[m, 0], emb[m, 1], s=9, color=cmap(int(c) % cmap.N), label=name)
            if i == 0:
                handles.append(h)
        tax.set_title(f"t-SNE of {layer} ({len(labels)} samples)", fontsize=11)
        tax.set_xticks([])
        tax.set_yticks([])
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(10, len(handles)), fontsize=11, markerscale=2,
                   title="class", title_fontsize=11, frameon=False)
        fig.subplots_adjust(bottom=0.08 if tsne_rows else 0.12)
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def machine_description() -> str:
    """CPU model (when readable), core count, torch threads and versions, one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sklearn
    import torch

    return (f"{cpu}, {os.cpu_count()} cpus, torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
            f"scikit-learn {sklearn.__version__}, {platform.platform()}")

