"""Claim (iv): task appropriateness ρ rises with depth (paper Fig. 3), measured per model section.

Section ``cifar10-vgg``: the project's CIFAR-10 classifier (a small VGG-style cousin of the
paper's VGG16: 5 conv stages, global pool, linear head) at cut points input, block1..block5,
pool, fc on class-balanced CIFAR-10 test images. ρ is the project's estimator
(``vcm_plugin.analysis.rho``; the paper's exact formula was not available). The trend is
judged per k by the Spearman rank correlation of ρ with the depth index, with its 95 %
interval over the paired bootstrap resamples (every layer uses the same resamples); the
verdict rule is fixed here, not tuned: "rises" when Spearman > 0 with p < 0.05 and the
bootstrap interval of Spearman above 0.

Section ``yolov5n`` (the detector half): the backbone of the YOLOv5n COCO detector (task model
``yolov5``, ``yolov5n.pt``) on square crops of COCO train2017 objects labelled by their category
(the most frequent categories, a per-class cap; crowd and small boxes skipped), at input
(the crop downsampled to 16x16x3) and after backbone layers 0, 2, 4, 6, 8 and 9 (SPPF), each
layer's (C, h, w) output global-average-pooled to a C-vector. Same estimator, k, bootstrap and
verdict rule as ``cifar10-vgg``.

More models are added as one function in :data:`SECTIONS` each: ``section(args, out_dir) -> dict``
with at least ``"markdown"`` (its report text) and ``"summary"`` (JSON-ready).

Usage: ``python experiments/claim4_rho.py --output DIR [--quick] [--seed S] [--sections cifar10-vgg,yolov5n]``;
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

CIFAR_ROOT_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
CIFAR_LAYERS = ["input", "block1", "block2", "block3", "block4", "block5", "pool", "fc"]
CIFAR_QUICK = {"max_images": 200, "k": [2, 8], "bootstrap": 3, "pca": 32, "tsne_samples": 100}
CIFAR_FULL = {"max_images": 2000, "k": [2, 16, 64], "bootstrap": 20, "pca": 64, "tsne_samples": 300}
ALPHA = 0.05

SHARED_DEFAULT = Path(__file__).resolve().parents[2] / "shared"
COCO_ROOT_DEFAULT = SHARED_DEFAULT / "data" / "coco"
WEIGHTS_DIR_DEFAULT = SHARED_DEFAULT / "weights"
#: (name in rho.csv, YOLOv5 layer index; -1 = the crop itself), in depth order; layer 9 (SPPF) ends the backbone
YOLO_LAYERS = [("input", -1), ("layer.0", 0), ("layer.2", 2), ("layer.4", 4), ("layer.6", 6), ("layer.8", 8),
               ("layer.9", 9)]
#: crops: COCO split (``--coco-split`` overrides it), boxes with both sides >= min_side px (original image),
#: square box enlarged by ``pad`` x its long side on each side (outside the image: YOLO's grey 114), resized to
#: ``size``; ``input`` at input_side^2 x 3
COCO_CROPS = {"split": "train2017", "min_side": 32, "pad": 0.1, "size": 128, "input_side": 16, "fill": 114}
YOLO_QUICK = {"classes": 5, "per_class": 30, "k": [2, 8], "bootstrap": 3, "pca": 32, "tsne_samples": 100}
YOLO_FULL = {"classes": 8, "per_class": 60, "k": [2, 16, 64], "bootstrap": 20, "pca": 64, "tsne_samples": 300}


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
    from vcm_plugin.analysis.appropriateness import run_appropriateness

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


# -- the detector half: YOLOv5n backbone on COCO object crops ------------------------------------
def square_crop(image: np.ndarray, bbox: list[float], pad: float, size: int, fill: int = 114) -> np.ndarray:
    """(size, size, 3) uint8: the square around COCO ``bbox`` [x, y, w, h] (side = long side x (1 + 2 pad),
    same centre), the part outside the image filled with ``fill``, resized bilinearly (PIL, antialiased)."""
    from PIL import Image

    x, y, w, h = (float(v) for v in bbox)
    side = max(1, int(round(max(w, h) * (1 + 2 * pad))))
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    canvas = np.full((side, side, 3), fill, dtype=np.uint8)
    height, width = image.shape[:2]
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(width, x0 + side), min(height, y0 + side)
    if ix1 > ix0 and iy1 > iy0:
        canvas[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.BILINEAR))


def coco_crops(root: Path, n_classes: int, per_class: int, seed: int, split: str = "train2017",
               min_side: int = 32, pad: float = 0.1, size: int = 128, fill: int = 114,
               **_: Any) -> dict[str, Any]:
    """Object crops of COCO ``split`` labelled by category: the ``n_classes`` categories with the most eligible
    boxes (not crowd, both sides >= ``min_side`` px; ties by category id), at most ``per_class`` of each (a
    seeded random pick). Returns crops (n, size, size, 3) uint8, labels (n,), class_names, and the counts."""
    from vcm_plugin import read_image

    ann_path = root / "annotations" / f"instances_{split}_subset.json"
    try:
        coco = json.loads(ann_path.read_text())
    except OSError as exc:
        raise SystemExit(f"yolov5n section: cannot read the COCO annotations {ann_path}: {exc}") from exc
    cat_names = {c["id"]: c["name"] for c in coco["categories"]}
    images = {im["id"]: im for im in coco["images"]}
    crowd = [a for a in coco["annotations"] if a.get("iscrowd")]
    small = [a for a in coco["annotations"] if not a.get("iscrowd") and min(a["bbox"][2:4]) < min_side]
    eligible: dict[int, list[dict[str, Any]]] = {}
    for a in sorted(coco["annotations"], key=lambda a: a["id"]):
        if not a.get("iscrowd") and min(a["bbox"][2:4]) >= min_side:
            eligible.setdefault(a["category_id"], []).append(a)
    ranked = sorted(eligible, key=lambda c: (-len(eligible[c]), c))[:n_classes]
    if len(ranked) < 2:
        raise SystemExit(f"yolov5n section: fewer than 2 categories with boxes >= {min_side} px in {ann_path}")
    rng = np.random.default_rng(seed)
    picked: list[tuple[dict[str, Any], int]] = []
    for label, cat in enumerate(ranked):
        members = eligible[cat]
        chosen = sorted(rng.permutation(len(members))[:per_class]) if len(members) > per_class else range(len(members))
        picked += [(members[i], label) for i in chosen]
    picked.sort(key=lambda p: (p[0]["image_id"], p[0]["id"]))  # each image decoded once
    crops, labels, current = [], [], (None, None)
    for ann, label in picked:
        if current[0] != ann["image_id"]:
            info = images[ann["image_id"]]
            current = (ann["image_id"], read_image(root / split / info["file_name"]))
            if current[1].shape[:2] != (info["height"], info["width"]):
                raise SystemExit(f"yolov5n section: {info['file_name']} is {current[1].shape[:2]}, the annotations "
                                 f"say {(info['height'], info['width'])}")
        crops.append(square_crop(current[1], ann["bbox"], pad, size, fill))
        labels.append(label)
    names = [cat_names[c] for c in ranked]
    used = np.bincount(labels, minlength=len(ranked))
    return {"crops": np.stack(crops), "labels": np.asarray(labels, dtype=np.int64), "class_names": names,
            "eligible": {cat_names[c]: len(v) for c, v in sorted(eligible.items(), key=lambda kv: -len(kv[1]))},
            "used": {n: int(m) for n, m in zip(names, used)}, "n_annotations": len(coco["annotations"]),
            "n_images": len({a["image_id"] for a, _ in picked}), "skipped_crowd": len(crowd),
            "skipped_small": len(small), "annotations": str(ann_path)}


def yolo_features(net: Any, crops: np.ndarray, layers: list[tuple[str, int]], input_side: int,
                  batch: int = 32) -> dict[str, np.ndarray]:
    """{layer name: (n, dims) float32}: ``input`` = the crop area-downsampled to input_side^2 x 3 in [0, 1],
    flattened; layer k = ``net.forward_to(x, k)[k]`` (x: (B, 3, H, W) RGB in [0, 1]) global-average-pooled over h, w."""
    import torch
    import torch.nn.functional as F

    out: dict[str, list[np.ndarray]] = {name: [] for name, _ in layers}
    with torch.inference_mode():
        for start in range(0, len(crops), batch):
            x = torch.from_numpy(crops[start:start + batch]).permute(0, 3, 1, 2).float().div_(255.0)
            for name, k in layers:
                if k < 0:
                    value = F.adaptive_avg_pool2d(x, input_side).flatten(1)
                else:
                    value = net.forward_to(x, k)[k].mean(dim=(2, 3))
                out[name].append(value.numpy().astype(np.float32))
    return {name: np.concatenate(v) for name, v in out.items()}


def rho_per_layer(feats: dict[str, np.ndarray], labels: np.ndarray, layers: list[str], ks: list[int],
                  pca: int, n_boot: int, seed: int, tsne_samples: int,
                  log: Callable[[str], None]) -> tuple[list[Any], dict[tuple[str, int], np.ndarray], dict[str, Any]]:
    """ρ rows (depth = position in ``layers``), bootstrap replicates and t-SNE embeddings, exactly as
    ``vcm appropriateness`` computes them (PCA once per layer, paired bootstrap, one label permutation)."""
    from vcm_plugin.analysis.report import RhoRow, tsne_embedding
    from vcm_plugin.analysis.rho import DEFAULT_ESTIMATOR, bootstrap_rho, get_estimator, pca_reduce

    est = get_estimator(DEFAULT_ESTIMATOR)
    shuffled = np.random.default_rng(seed).permutation(labels)  # for the chance level
    rows, replicates, tsne = [], {}, {}
    for depth, layer in enumerate(layers):
        t0 = time.perf_counter()
        raw = feats[layer]
        x = pca_reduce(raw, pca, seed)
        for k in ks:
            res = bootstrap_rho(x, labels, k, est, n_boot, seed)
            replicates[(layer, k)] = res.replicates
            chance = float(est(x, shuffled, k, seed=seed))
            rows.append(RhoRow(layer, depth, k, res.rho, res.ci_low, res.ci_high, len(labels), x.shape[1], seed,
                               raw.shape[1], n_boot, est.name, "percentile", chance))
        if tsne_samples > 0:
            tsne[layer] = tsne_embedding(x, labels, tsne_samples, seed)
        summary = ", ".join(f"k={r.k}: {r.rho:.3f}" for r in rows if r.layer == layer)
        log(f"{layer:<8} dims {raw.shape[1]} -> {x.shape[1]}  rho {summary}  ({time.perf_counter() - t0:.1f} s)")
    return rows, replicates, tsne


def yolo_section(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """ρ per backbone layer of YOLOv5n on COCO object crops labelled by category, the depth trend per k, and
    its Markdown."""
    from vcm_plugin.analysis.report import machine_description, plot_rho, write_rho_csv
    from vcm_plugin.tasks.registry import get_task_model

    start = time.perf_counter()
    cfg = dict(YOLO_QUICK if args.quick else YOLO_FULL)
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(f"[yolov5n] {msg}", file=sys.stderr, flush=True))
    crop = {**COCO_CROPS, "split": args.coco_split}
    data = coco_crops(Path(args.coco_root), cfg["classes"], cfg["per_class"], args.seed, **crop)
    labels, names = data["labels"], data["class_names"]
    n = len(labels)
    too_big = [k for k in cfg["k"] if k >= n]
    if too_big:
        raise SystemExit(f"yolov5n section: k = {too_big} must be below the number of crops ({n})")
    log(f"{n} crops of {data['n_images']} images, {len(names)} classes: {data['used']}")
    model = get_task_model("yolov5", weights="yolov5n.pt", search_path=[str(args.weights_dir)])
    net = model.network()
    t0 = time.perf_counter()
    feats = yolo_features(net, data["crops"], YOLO_LAYERS, crop["input_side"])
    modules = {name: (type(net.model[k]).__name__ if k >= 0 else "crop") for name, k in YOLO_LAYERS}
    log(f"features extracted in {time.perf_counter() - t0:.1f} s")
    layers = [name for name, _ in YOLO_LAYERS]
    rows, replicates, tsne = rho_per_layer(feats, labels, layers, cfg["k"], cfg["pca"], cfg["bootstrap"],
                                           args.seed, cfg["tsne_samples"], log)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": str(write_rho_csv(rows, out / "rho.csv"))}
    title = (f"Task appropriateness ρ of the YOLOv5n backbone on {n} COCO object crops ({len(names)} classes, "
             f"95 % bootstrap CI, B = {cfg['bootstrap']})")
    files["figure"] = str(plot_rho(rows, out / "rho.png", tsne, names, title))
    trends = [depth_trend(rows, replicates, k) for k in cfg["k"]]
    all_rise = all(t["rises"] for t in trends)
    any_rise = any(t["rises"] for t in trends)
    verdict = "yes" if all_rise else ("for some k only" if any_rise else "no")
    off = outside_ci(rows)
    wall = time.perf_counter() - start
    config = {**cfg, "crops": crop, "layers": layers, "layer_modules": modules, "pooling": "global average",
              "weights": str(model.weights_path()), "weights_sha256": model.weights_sha256(),
              "coco_root": str(args.coco_root)}
    counts = {k: data[k] for k in ("used", "eligible", "n_images", "n_annotations", "skipped_crowd",
                                   "skipped_small", "annotations")}
    info = {"config": config, "counts": counts, "n_samples": n, "wall_s": round(wall, 2),
            "machine": machine_description(),
            "definition": "project's rho_k(L) = I(Q_k(Y_L); T) / min(H(T), log2 k), not the paper's formula",
            "rows": [asdict(r) for r in rows]}
    (out / "rho.json").write_text(json.dumps(info, indent=2, default=float) + "\n")
    files["json"] = str(out / "rho.json")

    used = ", ".join(f"{name} {m}" for name, m in data["used"].items())
    lines = [
        "### yolov5n backbone on COCO object crops",
        "",
        f"**Does ρ rise with depth on the detector's backbone? {verdict}** "
        + "; ".join(f"k = {t['k']}: Spearman {t['spearman']:+.3f} (p = {t['p_value']:.2g}, bootstrap 95 % "
                    f"{t['spearman_boot_ci'][0]:+.3f} .. {t['spearman_boot_ci'][1]:+.3f}), ρ {t['rho_first']:.3f} at "
                    f"input -> {t['rho_last']:.3f} at layer.9 (SPPF), highest at {t['rho_max_layer']}"
                    for t in trends) + ".",
        "",
        "Model: the task model `yolov5` with `yolov5n.pt` (YOLOv5n v6.x, COCO-trained, BN folded), its backbone "
        "only: the output of layers 0 (Conv, stride 2), 2, 4, 6, 8 (C3, strides 4-32) and 9 (SPPF, the end of the "
        "backbone), from `network().forward_to(x, k)[k]` with x the crop as RGB in [0, 1]. Each layer's (C, h, w) "
        "output is **global-average-pooled to a C-vector** (16 to 256 dims), which discards where in the crop a "
        f"response is; `input` is the crop itself, area-downsampled to {crop['input_side']}x{crop['input_side']}x3 "
        f"and flattened ({3 * crop['input_side'] ** 2} dims), so it keeps its coarse layout.",
        "",
        f"Data: **{n} object crops** from {data['n_images']} COCO {crop['split']} images "
        f"(`{Path(data['annotations']).name}`, {data['n_annotations']} annotations; {data['skipped_crowd']} crowd and "
        f"{data['skipped_small']} boxes with a side < {crop['min_side']} px skipped), labelled by category: the "
        f"**{len(names)} categories** with the most eligible boxes, at most {cfg['per_class']} per class (a seeded "
        f"random pick): {used}. Each crop is the square around the box (long side + {crop['pad']:.0%} on each side, "
        f"grey {crop['fill']} outside the image), resized to {crop['size']}x{crop['size']}. "
        + ("These images are in YOLOv5n's training set (`--coco-split val2017` uses the held-out val subset "
           "instead). " if crop["split"] == "train2017" else "")
        + "Classes with fewer eligible boxes than the cap keep all of them, so the classes can be imbalanced.",
        "",
        f"Estimator and rule as for cifar10-vgg: features PCA-reduced to {cfg['pca']} dims (layers with fewer "
        f"channels keep theirs); k-means with k in {cfg['k']}; 95 % percentile bootstrap CI from B = "
        f"{cfg['bootstrap']} resamples shared by all layers; seed {args.seed}; 'rises' when Spearman > 0 with "
        f"p < {ALPHA} and its bootstrap interval above 0, for each k. Depth = position in the list below.",
        "",
        "| layer | module | depth | dims (pooled -> PCA) | "
        + " | ".join(f"ρ (k={k}) [95 % CI] | chance (k={k})" for k in cfg["k"]) + " |",
        "|---|---|---|---|" + "---|---|" * len(cfg["k"]),
    ]
    for depth, layer in enumerate(layers):
        cells = []
        for k in cfg["k"]:
            r = next(r for r in rows if r.layer == layer and r.k == k)
            cells += [f"{r.rho:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]", f"{r.rho_shuffled:.3f}"]
        r0 = next(r for r in rows if r.layer == layer)
        lines.append(f"| {layer} | {modules[layer]} | {depth} | {r0.raw_dims} -> {r0.dims} | " + " | ".join(cells)
                     + " |")
    lines.append("")
    for t in trends:
        if t["drops"]:
            lines.append(f"- k = {t['k']}: ρ falls between adjacent layers at " + "; ".join(t["drops"]) + ".")
    if off:
        lines.append(f"- The point estimate lies outside its percentile interval for {len(off)} of {len(rows)} "
                     f"(layer, k): {', '.join(off)} (resampling duplicates crops, which raises the plug-in MI of "
                     "the replicates).")
    big = [k for k in cfg["k"] if k * 4 > n]
    floors = "; ".join(f"k = {k}: {min(r.rho_shuffled for r in rows if r.k == k):.3f} .. "
                       f"{max(r.rho_shuffled for r in rows if r.k == k):.3f}" for k in cfg["k"])
    lines.append("- 'chance' is ρ with the labels permuted once: the plug-in estimator's floor, which grows with k "
                 f"({floors} over the layers; {n} crops, {n / max(cfg['k']):.1f} per cell at k = {max(cfg['k'])})"
                 + (f"; k = {', '.join(map(str, big))} leaves fewer than 4 crops per cell on average, so read those "
                    "columns against their chance level." if big else "."))
    lines += ["", f"Files: `yolov5n/rho.csv`, `yolov5n/rho.png` (ρ vs depth and t-SNE of {min(n, cfg['tsne_samples'])} "
              f"crops per layer), `yolov5n/rho.json`. Section wall time {wall:.0f} s.", ""]
    summary = {"model": "yolov5 (yolov5n.pt) backbone", "dataset": f"COCO {crop['split']} object crops",
               "config": {**cfg, "crops": crop, "layers": layers, "pooling": "global average"},
               "n_samples": n, "class_counts": data["used"], "trends": trends, "verdict": verdict,
               "wall_s": round(wall, 2), "files": files, "outside_ci": off}
    return {"markdown": "\n".join(lines), "summary": summary}


#: One function per model section (``section(args, out_dir) -> {"markdown", "summary", ...}``).
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {"cifar10-vgg": cifar_section,
                                                                             "yolov5n": yolo_section}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", "-o", required=True, help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help="k 2,8, B = 3; cifar: 200 images, yolov5n: about 150 crops (tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of PCA, k-means, bootstrap, t-SNE (default 0)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {list(SECTIONS)}")
    parser.add_argument("--cifar-root", default=str(CIFAR_ROOT_DEFAULT), help="CIFAR-10 folder (../shared/...)")
    parser.add_argument("--coco-root", default=str(COCO_ROOT_DEFAULT), help="COCO folder (../shared/...)")
    parser.add_argument("--coco-split", default=COCO_CROPS["split"], choices=["train2017", "val2017"],
                        help=f"COCO subset of the yolov5n crops (default {COCO_CROPS['split']})")
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR_DEFAULT), help="folder with yolov5n.pt")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS / OpenMP threads (default 1)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        parser.error(f"--sections: unknown {unknown}; known: {list(SECTIONS)}")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from vcm_plugin.analysis.appropriateness import limit_threads
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
