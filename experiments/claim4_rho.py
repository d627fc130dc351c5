"""Claim (iv): task appropriateness ρ rises with depth (paper Fig. 3), measured per model section.

Section ``cifar10-vgg``: the project's CIFAR-10 classifier (a small VGG-style cousin of the
paper's VGG16: 5 conv stages, global pool, linear head) at cut points input, block1..block5,
pool, fc on class-balanced CIFAR-10 test images. ρ is the project's estimator
(``vcm_plugin.analysis.rho``; the paper's exact formula was not available). The trend is
judged per k by the Spearman rank correlation of ρ with the depth index, with its 95 %
interval over the paired bootstrap resamples (every layer uses the same resamples); the
verdict rule is fixed here, not tuned: "rises" when Spearman > 0 with p < 0.05 and the
bootstrap interval of Spearman above 0.

More models (e.g. the detector half: a YOLOv5n backbone on COCO crops) are added as one
function in :data:`SECTIONS` each: ``section(args, out_dir) -> dict`` with at least
``"markdown"`` (its report text) and ``"summary"`` (JSON-ready).

Usage: ``python experiments/claim4_rho.py --output DIR [--quick] [--seed S] [--sections cifar10-vgg]``;
writes ``DIR/<section>/rho.csv``, ``rho.png``, ``rho.json``, ``DIR/claim4_rho.json`` and
``DIR/REPORT_section.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CIFAR_ROOT_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
CIFAR_LAYERS = ["input", "block1", "block2", "block3", "block4", "block5", "pool", "fc"]
CIFAR_QUICK = {"max_images": 200, "k": [2, 8], "bootstrap": 3, "pca": 32, "tsne_samples": 100}
CIFAR_FULL = {"max_images": 2000, "k": [2, 16, 64], "bootstrap": 20, "pca": 64, "tsne_samples": 300}
ALPHA = 0.05


def depth_trend(rows: list[Any], replicates: dict[tuple[str, int], np.ndarray], k: int) -> dict[str, Any]:
    """Spearman of ρ with depth for one k (scipy), its 95 % interval over the paired bootstrap replicates,
    adjacent-layer drops, and the verdict of the fixed rule (module docstring)."""
    from scipy.stats import spearmanr

    pts = sorted((r for r in rows if r.k == k), key=lambda r: r.depth)
    depth = np.array([r.depth for r in pts], dtype=float)
    rho = np.array([r.rho for r in pts])
    stat = spearmanr(depth, rho)
    r_s, p = float(stat.statistic), float(stat.pvalue)
    reps = np.stack([replicates[(r.layer, k)] for r in pts], 1) if pts and len(replicates[(pts[0].layer, k)]) \
        else np.empty((0, len(pts)))
    boot = [float(spearmanr(depth, rep).statistic) for rep in reps if np.isfinite(rep).all() and np.ptp(rep) > 0]
    ci = [float(v) for v in np.quantile(boot, [0.025, 0.975])] if boot else [float("nan")] * 2
    drops = [f"{a.layer} -> {b.layer} ({a.rho:.3f} -> {b.rho:.3f}{', beyond the CIs' if b.ci_high < a.ci_low else ''})"
             for a, b in zip(pts, pts[1:]) if b.rho < a.rho]
    rises = bool(r_s > 0 and p < ALPHA and (not boot or ci[0] > 0))
    return {"k": k, "spearman": r_s, "p_value": p, "spearman_boot_ci": ci, "n_boot_valid": len(boot),
            "rho_first": float(rho[0]), "rho_last": float(rho[-1]), "rho_max_layer": pts[int(np.argmax(rho))].layer,
            "drops": drops, "rises": rises}


def outside_ci(rows: list[Any]) -> list[str]:
    """(layer, k) whose point estimate lies outside its own bootstrap interval."""
    return [f"{r.layer}/k={r.k}" for r in rows if np.isfinite(r.ci_low) and not r.ci_low <= r.rho <= r.ci_high]


def cifar_section(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """ρ per layer of ``cifar10-vgg`` on CIFAR-10 test images, the depth trend per k, and its Markdown."""
    from vcm_plugin.analysis.cli import run_appropriateness

    cfg = dict(CIFAR_QUICK if args.quick else CIFAR_FULL)
    log = None if args.quiet else (lambda msg: print(f"[cifar10-vgg] {msg}", file=sys.stderr, flush=True))
    res = run_appropriateness("cifar10-vgg", "cifar10", CIFAR_LAYERS, str(args.cifar_root), "test",
                              cfg["max_images"], cfg["k"], cfg["pca"], cfg["bootstrap"], args.seed,
                              output=out, tsne_samples=cfg["tsne_samples"], log=log)
    trends = [depth_trend(res.rows, res.replicates, k) for k in cfg["k"]]
    all_rise = all(t["rises"] for t in trends)
    any_rise = any(t["rises"] for t in trends)
    verdict = "yes" if all_rise else ("for some k only" if any_rise else "no")
    same = [(a.layer, b.layer) for a in res.rows for b in res.rows if a.k == b.k and a.depth < b.depth
            and a.rho == b.rho and a.ci_low == b.ci_low and a.layer != b.layer]
    n = res.config["n_samples"]
    lines = [
        "### cifar10-vgg on CIFAR-10",
        "",
        f"**Does ρ rise with depth? {verdict}** "
        + "; ".join(f"k = {t['k']}: Spearman {t['spearman']:+.3f} (p = {t['p_value']:.2g}, bootstrap 95 % "
                    f"{t['spearman_boot_ci'][0]:+.3f} .. {t['spearman_boot_ci'][1]:+.3f}), ρ {t['rho_first']:.3f} at "
                    f"input -> {t['rho_last']:.3f} at fc, highest at {t['rho_max_layer']}" for t in trends) + ".",
        "",
        f"Model: `cifar10-vgg`, the project's CIFAR-10 classifier (top-1 0.803 on the test set), a small "
        "VGG-style cousin of the paper's VGG16 (5 conv stages of 32-128 channels, global average pool, linear "
        f"head), not VGG16 itself. Data: {n} class-balanced CIFAR-10 test images (`max_images` {cfg['max_images']}). "
        f"Features flattened per image and PCA-reduced to {cfg['pca']} dims (fc has 10); k-means with k in "
        f"{cfg['k']}; 95 % percentile bootstrap CI from B = {cfg['bootstrap']} resamples shared by all layers; "
        f"seed {args.seed}. ρ = I(Q_k(Y_L); T) / min(H(T), log2 k) is the project's estimator, not the paper's "
        "(its exact formula was not available). Verdict rule, fixed before looking: Spearman > 0 with "
        f"p < {ALPHA} and its bootstrap interval above 0, for each k.",
        "",
        "| layer | depth | " + " | ".join(f"ρ (k={k}) [95 % CI] | chance (k={k})" for k in cfg["k"]) + " |",
        "|---|---|" + "---|---|" * len(cfg["k"]),
    ]
    for layer in CIFAR_LAYERS:
        cells = []
        for k in cfg["k"]:
            r = next(r for r in res.rows if r.layer == layer and r.k == k)
            cells += [f"{r.rho:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]", f"{r.rho_shuffled:.3f}"]
        depth = next(r.depth for r in res.rows if r.layer == layer)
        lines.append(f"| {layer} | {depth} | " + " | ".join(cells) + " |")
    lines.append("")
    for t in trends:
        if t["drops"]:
            lines.append(f"- k = {t['k']}: ρ falls between adjacent layers at " + "; ".join(t["drops"]) + ".")
    if same:
        lines.append(f"- Identical features: {', '.join(f'{a} = {b}' for a, b in sorted(set(same)))} (block5's "
                     "output is 128x1x1, so the global pool only flattens it); both are kept in the trend.")
    off = outside_ci(res.rows)
    if off:
        lines.append(f"- The point estimate lies outside its percentile interval for {len(off)} of {len(res.rows)} "
                     f"(layer, k): {', '.join(off)}. Resampling with replacement duplicates images, which raises "
                     "the plug-in MI of the replicates (more for large k); `vcm appropriateness --ci basic` gives "
                     "the shift-corrected interval.")
    lines.append("- 'chance' is ρ with the labels permuted once: the plug-in estimator's floor, which grows with k.")
    lines += ["", f"Files: `cifar10-vgg/rho.csv`, `cifar10-vgg/rho.png` (ρ vs depth and t-SNE of "
              f"{cfg['tsne_samples']} images per layer), `cifar10-vgg/rho.json`. Section wall time "
              f"{res.wall_s:.0f} s.", ""]
    summary = {"model": "cifar10-vgg", "dataset": "cifar10 test", "config": {**cfg, "layers": CIFAR_LAYERS},
               "n_samples": n, "trends": trends, "verdict": verdict, "wall_s": round(res.wall_s, 2),
               "files": res.files, "outside_ci": off}
    return {"markdown": "\n".join(lines), "summary": summary}


#: One function per model section; the detector half of claim (iv) is to be added here.
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {"cifar10-vgg": cifar_section}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", "-o", required=True, help="output folder")
    parser.add_argument("--quick", action="store_true", help="200 images, k 2,8, B = 3 (tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of PCA, k-means, bootstrap, t-SNE (default 0)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {list(SECTIONS)}")
    parser.add_argument("--cifar-root", default=str(CIFAR_ROOT_DEFAULT), help="CIFAR-10 folder (../shared/...)")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS / OpenMP threads (default 1)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        parser.error(f"--sections: unknown {unknown}; known: {list(SECTIONS)}")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from vcm_plugin.analysis.cli import limit_threads
    from vcm_plugin.analysis.report import machine_description

    limit_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    results = {name: SECTIONS[name](args, out / name) for name in names}
    wall = time.perf_counter() - start
    info = {"experiment": "claim4_rho", "claim": "(iv) task appropriateness rho rises with depth",
            "quick": args.quick, "seed": args.seed, "sections": {n: r["summary"] for n, r in results.items()},
            "wall_s": round(wall, 2), "machine": machine_description(),
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
    (out / "claim4_rho.json").write_text(json.dumps(info, indent=2) + "\n")
    head = ["## Claim (iv): task appropriateness ρ rises with depth", "",
            "ρ per layer of a task model, measured with the project's estimator (see each section). "
            f"{'QUICK run (few images, small k and B): a smoke test, not evidence. ' if args.quick else ''}"
            f"Total wall time {wall:.0f} s on {info['machine']}.", ""]
    (out / "REPORT_section.md").write_text("\n".join(head) + "\n" + "\n".join(r["markdown"] for r in results.values()))
    for name, r in results.items():
        print(f"{name}: rho rises with depth: {r['summary']['verdict']}")
    print(f"wrote {out} ({wall:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
