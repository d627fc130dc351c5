"""Claim (ii): a codec trained on the task distortion beats one trained on an unsupervised input-MSE proxy.

Two codecs of the SAME analysis / synthesis sizes, started from the SAME weights, trained with the same
step budget, batch, optimiser and CIFAR-10 train images; only the training objective differs:

* **supervised** (``vcm train direct``): direct coding with ``decoder: front`` and ``down: 4``, i.e.
  exactly bmshj2018-hyperprior's g_a / h_a / h_s / g_s (N = 48, M = 96) followed by a trainable copy of
  ``cifar10-vgg``'s front layers up to the cut ``block2``; loss bpp + lmbda * KL(teacher || codec) at
  the classifier's output (the task distortion; no labels);
* **unsupervised** (``vcm train codec``): the CompressAI ``bmshj2018-hyperprior`` image codec itself,
  loss bpp + lmbda * 255^2 * MSE at the input; at test time the classifier runs on its decoded image.

Start: both from the project-zoo image codec ``vcm-hyperprior-q{INIT_QUALITY}`` (same N, M; trained on COCO,
never on CIFAR-10): the supervised codec via ``init_image_codec``, the unsupervised via ``init_from``. 32x32
images are replicate-padded to 64x64 by both (the hyperprior's multiple), at training and test time.
The rate at test is the whole real bitstream over the 32x32 original pixels.

Lambda grids and learning rate: one grid per objective (their distortions have different units), chosen
once from pilots before the full run so that both curves reach down to low rates (where top-1 falls) and
cover an overlapping rate range with >= 4 points each; not changed after seeing a BD-rate. Pilots (300
steps, 200 test images, seed 0; scratch folders, not kept): at lr 1e-4 neither codec moved far from the
start's rate (supervised lambda 10 .. 1000: 1.13 .. 1.18 bpp, top-1 49 .. 52 %; unsupervised lambda
0.0018 .. 0.36: 0.97 .. 1.34 bpp, 26 .. 28 %), so no BD-rate could be computed; at lr 5e-4 the rates
spread (supervised lambda 0.3 / 3 / 30: 0.23 / 0.77 / 1.44 bpp) but the supervised top-1 fell (14.5 /
40.5 / 39 %); at lr 2e-4: supervised lambda 1 / 10 / 100 -> 0.84 / 1.14 / 1.20 bpp at 47.5 / 49 /
49.5 %, unsupervised lambda 0.0067 -> 1.20 bpp at 28.5 %. Chosen: lr 2e-4, supervised (KL) lambda in
{0.1, 0.3, 1, 3, 10, 100}, unsupervised (MSE) lambda in {0.0002, 0.0006, 0.0018, 0.0067, 0.025, 0.36}.

Verdict rule (fixed before the run): "supported" when the 95 % image-bootstrap interval of
BD-rate(supervised vs unsupervised) lies below 0; "contradicted" when it lies above 0; otherwise
"inconclusive". If the BD-rate cannot be computed (no overlap of the top-1 ranges), the BD-top1 (points
at equal rate) decides the same way with the sign flipped (> 0 = supervised better).

Usage: ``python experiments/claim2_supervised.py --output DIR [--quick] [--seed S] [--jobs J]``; writes
``DIR/rd_points.csv``, ``DIR/bd_rate.csv``, ``DIR/claim2_supervised.json``, ``DIR/rd.png``,
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
N, M = 48, 96
INIT_QUALITY = 2
FULL = {"steps": 800, "lmbdas_supervised": [0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
        "lmbdas_unsupervised": [0.0002, 0.0006, 0.0018, 0.0067, 0.025, 0.36], "max_images": 500, "bootstrap": 300,
        "lr": 2e-4, "warmup_steps": 20, "batch_size": 16}
QUICK = {"steps": 4, "lmbdas_supervised": [0.3, 1.0, 3.0, 10.0],
         "lmbdas_unsupervised": [0.0035, 0.0067, 0.013, 0.025], "max_images": 20, "bootstrap": 20, "lr": 2e-4,
         "warmup_steps": 1, "batch_size": 4}
ARMS = {"supervised": "supervised: direct coding, KL at the output", "unsupervised": "unsupervised: image codec, MSE"}


def init_file() -> str:
    """Path of the zoo image codec both codecs start from."""
    from vcm_plugin.zoo import zoo_entry, zoo_file

    return str(zoo_file(zoo_entry(f"vcm-hyperprior-q{INIT_QUALITY}")))


def supervised_config(lmbda: float, cfg: dict[str, Any], args: Any) -> dict[str, Any]:
    """``vcm train direct`` config (decoder front, down 4: the image codec's transforms + the front copy)."""
    return {"kind": "direct", "task_model": C.TASK_MODEL, "cut": CUT, "distill": "output", "distortion": "kl",
            "lmbda": lmbda, "arch": {"N": N, "M": M, "down": 4, "entropy": "hyperprior", "decoder": "front"},
            "init_image_codec": f"vcm-hyperprior-q{INIT_QUALITY}",
            "data": C.cifar_data(args.cifar_root, 32, cfg["batch_size"], args.quick),
            "steps": cfg["steps"], "lr": cfg["lr"], "warmup_steps": cfg["warmup_steps"], "seed": args.seed,
            "threads": args.threads, "checkpoint_every": cfg["steps"], "val_every": cfg["steps"], **C.device_key(args)}


def unsupervised_config(lmbda: float, cfg: dict[str, Any], args: Any) -> dict[str, Any]:
    """``vcm train codec`` config: bmshj2018-hyperprior on input MSE, 32x32 images edge-padded to 64x64."""
    return {"kind": "codec", "architecture": "bmshj2018-hyperprior", "arch_params": {"N": N, "M": M},
            "lmbda": lmbda, "distortion": "mse", "init_from": init_file(),
            "data": C.cifar_data(args.cifar_root, 64, cfg["batch_size"], args.quick, small_images="pad"),
            "steps": cfg["steps"], "lr": cfg["lr"], "warmup_steps": cfg["warmup_steps"], "seed": args.seed,
            "threads": args.threads, "checkpoint_every": cfg["steps"], "val_every": cfg["steps"], **C.device_key(args)}


def verdict(entry: dict[str, Any]) -> str:
    """The fixed rule of the module docstring."""
    if entry["bd_rate_pct"] is not None:
        sign = C.ci_sign(entry)
        return {"below 0": "supported", "above 0": "contradicted"}.get(sign, "inconclusive")
    if entry["bd_top1_pts"] is not None:
        lo, hi = entry["ci95_top1"] or (entry["bd_top1_pts"], entry["bd_top1_pts"])
        return "supported (by BD-top1)" if lo > 0 else ("contradicted (by BD-top1)" if hi < 0 else "inconclusive")
    return "inconclusive (no BD value)"


def main(argv: list[str] | None = None) -> int:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--lmbdas-supervised", help="comma-separated (default: the fixed grid; for pilots)")
    parser.add_argument("--lmbdas-unsupervised", help="comma-separated (default: the fixed grid; for pilots)")
    parser.add_argument("--steps", type=int, help="step budget of every run (default 800)")
    parser.add_argument("--max-images", type=int, help="evaluation images (default 500)")
    parser.add_argument("--lr", type=float, help="learning rate of both codecs (default 2e-4; for pilots)")
    args = parser.parse_args(argv)
    out, log = C.setup(args)
    if args.replot:
        figure(C.read_json(out / "claim2_supervised.json"), out / "rd.png")
        return 0
    start = time.perf_counter()
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("lmbdas_supervised", "lmbdas_unsupervised"):
        if getattr(args, key):
            cfg[key] = [float(v) for v in getattr(args, key).split(",")]
    cfg.update({k: getattr(args, k) for k in ("steps", "max_images", "lr") if getattr(args, k)})
    cfg.update(steps=C.scaled(cfg["steps"], args.scale), warmup_steps=C.scaled(cfg["warmup_steps"], args.scale),
               scale=args.scale)
    machine_start = C.machine()

    arms: dict[str, dict[str, Any]] = {}
    runs = []
    for arm, make in (("supervised", supervised_config), ("unsupervised", unsupervised_config)):
        lmbdas = cfg[f"lmbdas_{arm}"]
        names = [f"{arm}-q{q}" for q in range(1, len(lmbdas) + 1)]
        kind = "direct" if arm == "supervised" else "codec"
        runs += [C.TrainRun(n, kind, make(lm, cfg, args)) for n, lm in zip(names, lmbdas)]
        arms[arm] = {"runs": names, "lmbdas": lmbdas, "steps": cfg["steps"]}
    # the slow direct runs first, interleaved with the image codec runs (two workers stay busy)
    order = [r for pair in zip(runs[:len(cfg["lmbdas_supervised"])], runs[len(cfg["lmbdas_supervised"]):])
             for r in pair]
    order += [r for r in runs if r not in order]
    t0 = time.perf_counter()
    results = C.train_runs(order, out, args.jobs, log)
    train_wall = time.perf_counter() - t0
    n_sup, n_uns = len(arms["supervised"]["runs"]), len(arms["unsupervised"]["runs"])
    codecs = {"supervised": {"codec": "direct", "task_model": C.TASK_MODEL, "cut": CUT,
                             "checkpoint": str(out / "train" / "supervised-q{quality}" / "model.pt"),
                             "qualities": list(range(1, n_sup + 1)), "threads": 1},
              "unsupervised": {"codec": "compressai", "model": "bmshj2018-hyperprior",
                               "checkpoint": str(out / "train" / "unsupervised-q{quality}" / "model.pt"),
                               "qualities": list(range(1, n_uns + 1)), "threads": 1}}
    ev = C.evaluate(codecs, out, args.cifar_root, cfg["max_images"], args.jobs, log)
    rows = C.rd_rows(arms, ev, results)
    C.write_rd(rows, out)
    bd = C.bd_entry(C.arm_points(rows, "unsupervised"), C.arm_points(rows, "supervised"), "unsupervised",
                    "supervised", ev["per_image"], cfg["bootstrap"], args.seed)
    with open(out / "bd_rate.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["test", "anchor", "bd_rate_pct", "ci95_low", "ci95_high", "bd_top1_pts", "overlap", "note"])
        ci = bd["ci95"] or ["", ""]
        writer.writerow([bd["test"], bd["anchor"], "" if bd["bd_rate_pct"] is None else bd["bd_rate_pct"], ci[0],
                         ci[1], "" if bd["bd_top1_pts"] is None else bd["bd_top1_pts"],
                         "" if bd["overlap"] is None else bd["overlap"], bd["note"]])
    final = verdict(bd)
    wall = time.perf_counter() - start
    info = {"experiment": "claim2_supervised", "claim": "(ii) supervised (task distortion) beats unsupervised (MSE)",
            "quick": args.quick, "seed": args.seed,
            "config": {**cfg, "cut": CUT, "N": N, "M": M, "init": f"vcm-hyperprior-q{INIT_QUALITY}",
                       "jobs": args.jobs, "threads": args.threads},
            "training_configs": {r.name: f"configs/{r.name}.yaml" for r in runs},
            "rd_points": rows, "uncompressed_top1": ev["uncompressed_top1"], "bd": bd, "verdict": final,
            "wall_s": {"total": round(wall, 1), "training": round(train_wall, 1), "evaluation": ev["wall_s"]},
            "machine": {"start": machine_start, "end": C.machine()}, "command": C.command_line(argv)}
    C.write_json(out / "claim2_supervised.json", info)
    figure(info, out / "rd.png")
    (out / "REPORT_section.md").write_text(report(info, cfg))
    log(f"claim (ii): {final}; {C.fmt_both(bd)} ({wall:.0f} s)")
    return 0


def figure(info: dict[str, Any], path: Path) -> None:
    """RD curves of both arms from the JSON record."""
    rows, cfg = info["rd_points"], info["config"]
    C.plot_rd([(ARMS["supervised"], C.arm_points(rows, "supervised"), {"color": "tab:red"}),
               (ARMS["unsupervised"], C.arm_points(rows, "unsupervised"), {"color": "tab:green", "marker": "s"})],
              info["uncompressed_top1"], path,
              f"Claim (ii) supervised vs unsupervised: same bmshj2018 transforms (N={cfg['N']}, M={cfg['M']}) and "
              f"start, {cfg['steps']} steps ({cfg['max_images']} CIFAR-10 test images)")


def report(info: dict[str, Any], cfg: dict[str, Any]) -> str:
    """The Markdown section of claim (ii)."""
    rows, bd, unc = info["rd_points"], info["bd"], info["uncompressed_top1"]
    quick = "QUICK run (a few steps and images): a smoke test of the pipeline, not evidence. " if info["quick"] else ""
    note = "; ".join(filter(None, [bd["note"], *(["envelope dropped " + ", ".join(bd["dropped"])]
                                                 if bd["dropped"] else [])]))
    overlap = "n/a" if bd["overlap"] is None else f"{bd['overlap']:.2f}"
    lines = ["## Claim (ii): supervised (task distortion) beats unsupervised (input MSE)", "",
             f"**Does our measurement support the claim? {info['verdict']}** BD-rate of the supervised codec "
             f"against the unsupervised one: {C.fmt_bd(bd)} (negative = fewer bits for the same top-1); "
             f"BD-top1 {C.fmt_top1(bd)} points at equal rate; overlap {overlap}"
             f"{'; ' + note if note else ''}. Rule: the 95 % image-bootstrap interval of the BD-rate below 0.", "",
             f"{quick}Both codecs have the same bmshj2018-hyperprior analysis / synthesis (N = {N}, M = {M}, "
             f"g_a, h_a, h_s, g_s) and start from the same weights (zoo `{info['config']['init']}`, trained on "
             f"COCO); the supervised one adds a trainable copy of cifar10-vgg's front layers up to `{CUT}` after "
             f"g_s (`vcm train direct`, `decoder: front`, `down: 4`) and is trained on bpp + λ·KL at the "
             f"classifier's output; the unsupervised one (`vcm train codec`) on bpp + λ·255²·MSE at the input. "
             f"Same {cfg['steps']} steps of batch {cfg['batch_size']} (lr {cfg['lr']}), CIFAR-10 train images, "
             f"seed {info['seed']}; λ grids and lr fixed from pilots before the run (see the script's docstring): "
             f"λ (KL) in {cfg['lmbdas_supervised']}, λ (MSE) in "
             f"{cfg['lmbdas_unsupervised']}. Evaluated by the harness with real bitstreams on "
             f"{cfg['max_images']} class-balanced CIFAR-10 test images (uncompressed top-1 {unc:.1f} %); "
             f"{cfg['bootstrap']} bootstrap resamples of the images.", "",
             "| arm | λ | bpp | top-1 % | train s |", "|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['lmbda']:g} | {r['bpp']:.4f} | {r['top1']:.1f} | {r['train_wall_s']:.0f} |"
              for r in rows]
    w = info["wall_s"]
    lines += ["", "![claim (ii) RD curves](rd.png)", "",
              f"Files: `rd_points.csv`, `bd_rate.csv`, `claim2_supervised.json`, training YAMLs in `configs/`. Wall "
              f"time {w['total']:.0f} s (training {w['training']:.0f} s, evaluation {w['evaluation']:.0f} s) with "
              f"{info['config']['jobs']} processes of {info['config']['threads']} thread(s); load average at the end "
              f"{info['machine']['end']['loadavg']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
