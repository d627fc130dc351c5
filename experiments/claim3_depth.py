"""Claim (iii): distilling through a deeper layer of the task model gives a better task RD curve.

Learned feature codecs (model splitting, ``vcm train feature``) for ``cifar10-vgg``, all with the same cut
``block2`` (Y1 = 64x8x8 -> bitstream -> Ŷ1), architecture (the feature codec of claim (i): N = 48, M = 96,
scale hyperprior, one stride-2 analysis step), step budget, optimiser and CIFAR-10 train images; only the
distillation point Y2 differs (paper Fig. 4: loss bpp + lmbda * d(M(Ŷ1), M(Y1)) through the frozen
mid-model M). Feature codecs, not direct ones: claim (i)'s pilots showed that direct codecs trained from
scratch stay near chance for hundreds of CPU steps, which would hide any effect of the distillation point.

* ``Y1`` = ``block2`` (plain feature distillation), ``block3``, ``block4``: normalised MSE at Y2 (MSE
  divided by the teacher's variance, so lmbda means the same at every depth);
* ``output``: KL between the classifier's posteriors (full task distillation).

Lambda grids: the three MSE points share one grid, the KL point has its own (different unit); both were
chosen once from pilots before the full run so that every curve covers an overlapping rate range with >= 4
points, and were not changed after seeing a BD-rate. Pilot (300 steps, 200 test images, lr 5e-4, seed 0;
scratch folders, not kept): normalised MSE at ``block2`` with lambda 1 / 10 / 100 / 1000 -> 0.41 (the
bitstream's rate floor) / 0.87 / 2.90 / 3.71 bpp at top-1 10 / 33.5 / 68.5 / 72.5 %; at ``block4`` ->
0.41 / 0.74 / 2.27 / 2.87 bpp at 11 / 45 / 67 / 69 %; KL at the output: claim (i)'s feature-codec pilot
(lambda 1 .. 300 -> 0.45 .. 2.35 bpp). Grids: MSE lambda in {3, 10, 30, 100, 300, 1000}, KL lambda in
{1, 3, 10, 30, 100, 300}.

BD-rate of each deeper point against distillation at Y1 (negative = fewer bits for the same top-1), with
a 95 % bootstrap interval over the test images. Verdict rule (fixed before the run): "supported" when the
interval lies below 0 for EVERY deeper point; "partly" when it does for some and none lies above 0;
"contradicted" when one lies above 0 and none below; otherwise "inconclusive".

Usage: ``python experiments/claim3_depth.py --output DIR [--quick] [--seed S] [--jobs J]``; writes
``DIR/rd_points.csv``, ``DIR/bd_rate.csv``, ``DIR/claim3_depth.json``, ``DIR/rd.png``,
``DIR/REPORT_section.md``, the training YAMLs in ``DIR/configs/`` and the harness run in ``DIR/eval/``.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CUT = "block2"
POINTS = {"block2": "mse", "block3": "mse", "block4": "mse", "output": "kl"}  # distillation point -> distortion
ARCH = {"N": 48, "M": 96, "entropy": "hyperprior", "res_blocks": 2, "down": 1}
FULL = {"steps": 600, "lmbdas_mse": [3.0, 10.0, 30.0, 100.0, 300.0, 1000.0],
        "lmbdas_kl": [1.0, 3.0, 10.0, 30.0, 100.0, 300.0], "points": list(POINTS),
        "max_images": 500, "bootstrap": 300, "lr": 5e-4, "warmup_steps": 50, "batch_size": 16}
QUICK = {"steps": 6, "points": ["block2", "block4", "output"], "lmbdas_mse": [0.3, 1.0, 3.0, 10.0],
         "lmbdas_kl": [0.3, 1.0, 3.0, 10.0], "max_images": 20, "bootstrap": 20, "lr": 5e-4, "warmup_steps": 2,
         "batch_size": 8}
COLORS = {"block2": "tab:gray", "block3": "tab:orange", "block4": "tab:purple", "output": "tab:red"}


def train_config(point: str, lmbda: float, cfg: dict[str, Any], args: Any) -> dict[str, Any]:
    """The ``vcm train feature`` config of one (distillation point, lambda)."""
    return {"kind": "feature", "task_model": C.TASK_MODEL, "cut": CUT, "distill": point,
            "distortion": POINTS[point], "lmbda": lmbda, "arch": ARCH,
            "data": C.cifar_data(args.cifar_root, 32, cfg["batch_size"], args.quick),
            "steps": cfg["steps"], "lr": cfg["lr"], "warmup_steps": min(cfg["warmup_steps"], cfg["steps"] // 4),
            "seed": args.seed, "threads": args.threads, "checkpoint_every": cfg["steps"],
            "val_every": cfg["steps"], **C.device_key(args)}


def verdict(entries: list[dict[str, Any]]) -> str:
    """The fixed rule of the module docstring over the deeper points' BD entries (``_common.depth_verdict``)."""
    return C.depth_verdict(entries)


def main(argv: list[str] | None = None) -> int:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--lmbdas-mse", help="comma-separated (default: the fixed grid; for pilots)")
    parser.add_argument("--lmbdas-kl", help="comma-separated (default: the fixed grid; for pilots)")
    parser.add_argument("--points", help=f"comma-separated distillation points (default {','.join(POINTS)})")
    parser.add_argument("--steps", type=int, help="step budget of every run (default 600)")
    parser.add_argument("--max-images", type=int, help="evaluation images (default 500)")
    args = parser.parse_args(argv)
    out, log = C.setup(args)
    if args.replot:
        figure(C.read_json(out / "claim3_depth.json"), out / "rd.png")
        return 0
    start = time.perf_counter()
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("lmbdas_mse", "lmbdas_kl"):
        if getattr(args, key):
            cfg[key] = [float(v) for v in getattr(args, key).split(",")]
    cfg.update({k: getattr(args, k) for k in ("steps", "max_images") if getattr(args, k)})
    cfg.update(steps=C.scaled(cfg["steps"], args.scale), warmup_steps=C.scaled(cfg["warmup_steps"], args.scale),
               scale=args.scale)
    points = [p.strip() for p in args.points.split(",")] if args.points else cfg["points"]
    cfg["points"] = points
    unknown = [p for p in points if p not in POINTS]
    if unknown or points[0] != CUT:
        parser.error(f"--points: the first must be the cut {CUT!r} and all of {list(POINTS)} (got {points})")
    machine_start = C.machine()

    arms: dict[str, dict[str, Any]] = {}
    runs = []
    for point in points:
        lmbdas = cfg["lmbdas_kl" if POINTS[point] == "kl" else "lmbdas_mse"]
        label = f"distill-{point}"
        names = [f"{label}-q{q}" for q in range(1, len(lmbdas) + 1)]
        runs += [C.TrainRun(n, "feature", train_config(point, lm, cfg, args)) for n, lm in zip(names, lmbdas)]
        arms[label] = {"runs": names, "lmbdas": lmbdas, "steps": cfg["steps"], "point": point}
    t0 = time.perf_counter()
    results = C.train_runs(runs, out, args.jobs, log)
    train_wall = time.perf_counter() - t0
    codecs = {label: {"codec": "feature-learned", "task_model": C.TASK_MODEL, "cut": CUT,
                      "checkpoint": str(out / "train" / f"{label}-q{{quality}}" / "model.pt"),
                      "qualities": list(range(1, len(arm["runs"]) + 1)), "threads": 1}
              for label, arm in arms.items()}
    ev = C.evaluate(codecs, out, args.cifar_root, cfg["max_images"], args.jobs, log)
    rows = C.rd_rows(arms, ev, results)
    C.write_rd(rows, out)
    base = f"distill-{CUT}"
    bds = [{"point": arm["point"], **C.bd_entry(C.arm_points(rows, base), C.arm_points(rows, label), base, label,
                                                ev["per_image"], cfg["bootstrap"], args.seed)}
           for label, arm in arms.items() if label != base]
    with open(out / "bd_rate.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["distill", "test", "anchor", "bd_rate_pct", "ci95_low", "ci95_high", "bd_top1_pts",
                         "overlap", "note"])
        for b in bds:
            ci = b["ci95"] or ["", ""]
            writer.writerow([b["point"], b["test"], b["anchor"], "" if b["bd_rate_pct"] is None else b["bd_rate_pct"],
                             ci[0], ci[1], "" if b["bd_top1_pts"] is None else b["bd_top1_pts"],
                             "" if b["overlap"] is None else b["overlap"], b["note"]])
    final = verdict(bds)
    wall = time.perf_counter() - start
    info = {"experiment": "claim3_depth", "claim": "(iii) deeper distillation points give better task RD",
            "quick": args.quick, "seed": args.seed,
            "config": {**cfg, "cut": CUT, "points": {p: POINTS[p] for p in points}, "arch": ARCH, "jobs": args.jobs,
                       "threads": args.threads},
            "training_configs": {r.name: f"configs/{r.name}.yaml" for r in runs},
            "rd_points": rows, "uncompressed_top1": ev["uncompressed_top1"], "bd": bds, "verdict": final,
            "wall_s": {"total": round(wall, 1), "training": round(train_wall, 1), "evaluation": ev["wall_s"]},
            "machine": {"start": machine_start, "end": C.machine()}, "command": C.command_line(argv)}
    C.write_json(out / "claim3_depth.json", info)
    figure(info, out / "rd.png")
    (out / "REPORT_section.md").write_text(report(info, cfg))
    log(f"claim (iii): {final}; " + "; ".join(f"{b['point']}: {C.fmt_both(b)}" for b in bds) + f" ({wall:.0f} s)")
    return 0


def figure(info: dict[str, Any], path: Path) -> None:
    """RD curves of every distillation point from the JSON record."""
    rows, cfg = info["rd_points"], info["config"]
    C.plot_rd([(f"distilled at {point} ({kind.upper()})", C.arm_points(rows, f"distill-{point}"),
                {"color": COLORS[point]}) for point, kind in cfg["points"].items()],
              info["uncompressed_top1"], path, f"Claim (iii) depth: feature codec at {CUT}, distillation point "
              f"varied, {cfg['steps']} steps ({cfg['max_images']} CIFAR-10 test images)")


def report(info: dict[str, Any], cfg: dict[str, Any]) -> str:
    """The Markdown section of claim (iii)."""
    rows, bds, unc = info["rd_points"], info["bd"], info["uncompressed_top1"]
    quick = "QUICK run (a few steps and images): a smoke test of the pipeline, not evidence. " if info["quick"] else ""
    lines = ["## Claim (iii): deeper distillation points give better task RD", "",
             f"**Does our measurement support the claim? {info['verdict']}** BD-rate against distillation at Y1 "
             f"(`{CUT}`): " + "; ".join(f"`{b['point']}` {C.fmt_both(b)}" for b in bds)
             + ". Rule: the 95 % image-bootstrap interval below 0 for every deeper point.", "",
             f"{quick}Learned feature codecs (model splitting: Y1 at `{CUT}`, 64x8x8 -> bitstream -> Ŷ1), N = 48, "
             f"M = 96, scale hyperprior, the same architecture, {cfg['steps']} steps of batch {cfg['batch_size']} "
             f"(lr {cfg['lr']}, cosine), CIFAR-10 train images and seed {info['seed']} for every arm (λ grids fixed "
             f"from a pilot before the run, see the script's docstring); only the "
             f"distillation point differs: normalised MSE at `block2` (= Y1), `block3`, `block4` with λ in "
             f"{cfg['lmbdas_mse']}, KL at the output with λ in {cfg['lmbdas_kl']}. Evaluated by the harness with "
             f"real bitstreams on {cfg['max_images']} class-balanced CIFAR-10 test images (uncompressed top-1 "
             f"{unc:.1f} %); {cfg['bootstrap']} bootstrap resamples of the images.", "",
             "| distillation point | BD-rate vs Y1 [95 % CI] | BD-top1 vs Y1 (points) | overlap | note |",
             "|---|---|---|---|---|"]
    for b in bds:
        note = "; ".join(filter(None, [b["note"], *(["envelope dropped " + ", ".join(b["dropped"])]
                                                     if b["dropped"] else [])]))
        lines.append(f"| `{b['point']}` ({POINTS[b['point']]}) | {C.fmt_bd(b)} | {C.fmt_top1(b)} | "
                     f"{'n/a' if b['overlap'] is None else format(b['overlap'], '.2f')} | {note or '-'} |")
    lines += ["", "| arm | λ | bpp | top-1 % | train s |", "|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['lmbda']:g} | {r['bpp']:.4f} | {r['top1']:.1f} | {r['train_wall_s']:.0f} |"
              for r in rows]
    w = info["wall_s"]
    lines += ["", "![claim (iii) RD curves](rd.png)", "",
              f"Files: `rd_points.csv`, `bd_rate.csv`, `claim3_depth.json`, training YAMLs in `configs/`. Wall time "
              f"{w['total']:.0f} s (training {w['training']:.0f} s, evaluation {w['evaluation']:.0f} s) with "
              f"{info['config']['jobs']} processes of {info['config']['threads']} thread(s); load average at the end "
              f"{info['machine']['end']['loadavg']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
