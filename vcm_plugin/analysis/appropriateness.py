"""Task appropriateness ρ per layer of a task model on a labelled dataset, with t-SNE views.

Run by ``vcm appropriateness`` (:mod:`vcm_plugin.cli.appropriateness`).

Writes ``rho.csv`` (:mod:`vcm_plugin.analysis.report`), ``rho.png`` and ``rho.json``
(configuration, wall time, machine) to ``--output``. ρ is the project's estimator
(:mod:`vcm_plugin.analysis.rho`), not the paper's exact formula, which was not available.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcm_plugin.analysis.rho import CI_METHODS, DEFAULT_ESTIMATOR, AnalysisError

logger = logging.getLogger(__name__)


@dataclass
class AppropriatenessResult:
    """Rows of ``rho.csv``, the bootstrap replicates {(layer, k): (B,) ρ}, output files and timing (s)."""

    rows: list[Any]
    replicates: dict[tuple[str, int], np.ndarray] = field(repr=False)
    files: dict[str, str]
    config: dict[str, Any]
    wall_s: float


def parse_ks(text: str | Sequence[int]) -> list[int]:
    """``"2,16,256"`` -> [2, 16, 256]; every k must be an integer >= 2 (errors name ``--k``)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    ks: list[int] = []
    for item in items:
        try:
            k = int(str(item).strip())
        except ValueError:
            raise AnalysisError(f"--k {text!r}: {item!r} is not an integer") from None
        if k < 2:
            raise AnalysisError(f"--k {text!r}: k = {k} is below 2 (a quantiser needs >= 2 levels)")
        if k not in ks:
            ks.append(k)
    if not ks:
        raise AnalysisError(f"--k {text!r}: no k given")
    return ks


def limit_threads(threads: int | None) -> None:
    """Cap torch and the BLAS / OpenMP pools (k-means, PCA, t-SNE) at ``threads``; None leaves them."""
    if threads is None:
        return
    if threads < 1:
        raise AnalysisError(f"--threads {threads}: must be >= 1")
    import sklearn.cluster  # noqa: F401  (loads its OpenMP runtime so that the limit reaches it)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def run_appropriateness(model: str, dataset: str, layers: Sequence[str] | None = None, root: str | None = None,
                        split: str | None = "test", max_images: int | None = None,
                        ks: Sequence[int] = (2, 16, 256), pca: int | None = 64, n_boot: int = 20, seed: int = 0,
                        estimator: str = DEFAULT_ESTIMATOR, output: str | Path | None = None,
                        model_params: dict[str, Any] | None = None, tsne_samples: int = 300,
                        ci_method: str = "percentile",
                        log: Callable[[str], None] | None = None) -> AppropriatenessResult:
    """ρ of each layer of task model ``model`` on ``dataset`` for every k, with bootstrap CIs.

    Features per layer are PCA-reduced to ``pca`` dims (clamped; None: none), fitted once
    on all samples (label-free); the bootstrap (``n_boot`` resamples, shared by all layers
    for a given seed) refits the quantiser; each row also has ρ with the labels permuted once
    (the chance level). With ``output`` the CSV, figure (t-SNE on at
    most ``tsne_samples`` samples; 0 skips it) and JSON are written there. ``ci_method``:
    see :func:`~vcm_plugin.analysis.rho.bootstrap_rho`. Progress lines go to ``log`` (default: this module's
    logger, at INFO).
    """
    from vcm_plugin.analysis.features import layer_features, load_labelled_images, resolve_layers
    from vcm_plugin.analysis.report import RhoRow, machine_description, plot_rho, tsne_embedding, write_rho_csv
    from vcm_plugin.analysis.rho import bootstrap_rho, get_estimator, pca_reduce
    from vcm_plugin.tasks.registry import get_task_model

    log = log or logger.info
    start = time.perf_counter()
    ks = parse_ks(ks)
    est = get_estimator(estimator)
    if pca is not None and pca < 1:
        raise AnalysisError(f"--pca {pca}: must be >= 1")
    if ci_method not in CI_METHODS:
        raise AnalysisError(f"--ci {ci_method!r}: expected one of {list(CI_METHODS)}")
    if n_boot < 0:
        raise AnalysisError(f"--bootstrap {n_boot}: must be >= 0")
    params = dict(model_params or {})
    if isinstance(params.get("search_path"), str):  # --param search_path=DIR
        params["search_path"] = [params["search_path"]]
    task_model = get_task_model(model, **params)
    layers = resolve_layers(task_model, layers)
    depth = {name: i for i, name in enumerate(task_model.cut_points())}  # input = 0
    data = load_labelled_images(dataset, root, split, max_images)
    n = len(data.labels)
    present = np.unique(data.labels)
    if len(present) < 2:
        raise AnalysisError(f"dataset {dataset!r}: only {len(present)} class present among the {n} images; "
                            "ρ needs at least 2 classes (raise --max-images)")
    too_big = [k for k in ks if k >= n]
    if too_big:
        raise AnalysisError(f"--k: k = {too_big} must be smaller than the number of images ({n}); "
                            "lower k or raise --max-images")
    log(f"{model}: {len(layers)} layer(s) on {n} images of {dataset} ({len(present)} classes)")
    t0 = time.perf_counter()
    feats = layer_features(task_model, data.images, layers)
    log(f"features extracted in {time.perf_counter() - t0:.1f} s")

    shuffled = np.random.default_rng(seed).permutation(data.labels)  # for the chance level
    rows: list[RhoRow] = []
    replicates: dict[tuple[str, int], np.ndarray] = {}
    tsne: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for layer in layers:
        t0 = time.perf_counter()
        raw = feats.pop(layer)
        x = pca_reduce(raw, pca, seed)
        for k in ks:
            res = bootstrap_rho(x, data.labels, k, est, n_boot, seed, method=ci_method)
            replicates[(layer, k)] = res.replicates
            chance = float(est(x, shuffled, k, seed=seed))
            rows.append(RhoRow(layer, depth[layer], k, res.rho, res.ci_low, res.ci_high, n,
                               x.shape[1], seed, raw.shape[1], n_boot, est.name, ci_method, chance))
        if output is not None and tsne_samples > 0:
            tsne[layer] = tsne_embedding(x, data.labels, tsne_samples, seed)
        summary = ", ".join(f"k={r.k}: {r.rho:.3f}" for r in rows if r.layer == layer)
        log(f"{layer:<10} dims {raw.shape[1]} -> {x.shape[1]}  rho {summary}  ({time.perf_counter() - t0:.1f} s)")

    config = {"model": model, "model_params": params, "dataset": dataset, "root": root, "split": split,
              "max_images": max_images, "n_samples": n, "layers": layers, "k": ks, "pca": pca, "bootstrap": n_boot,
              "seed": seed, "estimator": est.name, "ci_method": ci_method, "tsne_samples": tsne_samples,
              "class_counts": {data.class_names[int(c)] if int(c) < len(data.class_names) else str(c): int(m)
                               for c, m in zip(*np.unique(data.labels, return_counts=True))}}
    files: dict[str, str] = {}
    if output is not None:
        out = Path(output)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AnalysisError(f"--output {out}: cannot create the folder: {exc.strerror or exc}") from exc
        files["csv"] = str(write_rho_csv(rows, out / "rho.csv"))
        title = f"Task appropriateness ρ of {model} on {dataset} ({n} images, 95 % bootstrap CI, B = {n_boot})"
        files["figure"] = str(plot_rho(rows, out / "rho.png", tsne, data.class_names, title))
    wall = time.perf_counter() - start
    if output is not None:
        info = {"config": config, "wall_s": round(wall, 2), "machine": machine_description(),
                "definition": "project's rho_k(L) = I(Q_k(Y_L); T) / min(H(T), log2 k), not the paper's formula",
                "rows": [asdict(r) for r in rows]}
        (out / "rho.json").write_text(json.dumps(info, indent=2, default=float) + "\n")
        files["json"] = str(out / "rho.json")
    return AppropriatenessResult(rows, replicates, files, config, wall)

