"""Claim (i), Theorem 1: direct coding and model splitting reach the same task rate-distortion.

Theorem 1 is about OPTIMAL codecs: the fewest bits for a given task distortion are the same whether the
encoder sees X (direct coding) or Y1 = front(X) (model splitting). A finite-training gap measures the
optimiser as much as the theorem, so this script compares model splitting with three direct-coding arms
that differ in where their optimisation starts, over a ladder of step budgets, and reports how the gap
moves with the budget. Task model ``cifar10-vgg`` cut at ``block2`` (Y1 = 64x8x8 for a 32x32 image); every
arm is trained with the SAME loss, bpp + lmbda * KL(teacher posterior || codec's) at the output through the
frozen mid-model, on CIFAR-10 train images, N = 48 / M = 96, scale hyperprior, batch 16, cosine lr:

* ``feature`` (model splitting, ``vcm train feature``): Y1 -> analysis (one stride-2 step) -> bitstream ->
  synthesis -> Ŷ1;
* ``direct-split`` (direct coding that starts as the split codec, ``arch.encoder: front``): the image ->
  a trainable copy of the task model's front layers -> exactly the feature codec's analysis -> bitstream ->
  the feature codec's synthesis. Built with the same seed it IS the feature codec at step 0 (same weights,
  same bitstreams; tests/test_task_codecs.py checks it), its front copy is frozen for the first half of the
  steps (``front_frozen_steps``: at the feature codec's lr, so far its training is the feature codec's,
  step for step; at another lr, as the piloted 1e-3 against 5e-4, only the start is shared) and trains with
  the rest for the second half. Theorem 1 says the extra freedom cannot beat model splitting at the optimum
  and the shared start says it need not be worse;
* ``direct-front`` (``decoder: front``, as claim (ii)'s supervised codec): bmshj2018-hyperprior's g_a / h_a /
  h_s / g_s (``down`` 4, images replicate-padded to 64x64) started from the zoo image codec
  ``vcm-hyperprior-q2`` (trained on COCO), then a trainable copy of the front layers -> Ŷ1;
* ``direct-plain`` (the arm of the first version, kept for comparison): the image -> analysis (three
  stride-2 steps) -> bitstream -> the feature codec's kind of latent decoder -> Ŷ1, from scratch.

Every arm is evaluated by the harness with real bitstreams on the same class-balanced CIFAR-10 test images
(top-1 of cifar10-vgg on Ŷ1); BD-rate and BD-top1 of each direct arm against ``feature`` at each budget,
with 95 % bootstrap intervals over the images (``_common.bd_entry``).

Budgets: the ladder is 300 / 1,200 / 4,800 steps (times ``--scale``). The CPU default (``make
experiments``) runs the first two rungs, 300 and 1,200: the 4,800 rung alone would add about 3 h on 2
cores; ``--budgets 300,1200,4800`` runs the whole ladder (``experiments/gpu_claim1.sh`` on a GPU machine).
``--max-wall S`` is a time guard: before each rung (after the first, or after the pilot), its training time
is estimated from the previous rung's (or the pilot's) seconds per training step, all runs together (an
over-estimate for longer runs: the fixed costs do not grow), and its evaluation from the previous rung's
seconds per RD point (2 s per point after the pilot); when the whole rung would end after S seconds from the
start, only ``feature`` and the first direct arms (in the order below) that fit are run, or none, and then
no later rung; the record says which were left out and why.

Hyper-parameters (lr, lambda grid), chosen per arm by ONE pilot procedure, fixed here before the final
runs and applied the same way to every arm (``--pilot`` runs it first, in the same invocation, on images
held out from CIFAR-10 train, never on the test images):

1. learning rate: each lr in ``PILOT["lrs"]`` trained at each lambda in ``PILOT["lr_lmbdas"]`` for the first
   rung's budget; the lr with the lowest mean of log(validation loss) (loss = bpp + lambda * KL of real
   bitstreams on ``PILOT["val_count"]`` held-out train images) wins; a failed run (non-finite loss) counts as
   an infinite loss; ties go to the smaller lr;
2. lambda grid: at that lr, every lambda of ``PILOT["lmbdas"]``; "informative" = validation top-1 agreement
   with the uncompressed model >= ``PILOT["agreement"]`` (3x chance); the grid is the ``n_lmbdas``
   consecutive lambdas that start one below the smallest informative lambda (so each curve reaches down to
   where top-1 falls), moved down when fewer than ``n_lmbdas`` remain above; the ``n_lmbdas`` largest when
   no lambda is informative.

Without ``--pilot`` (the CPU default) the grids are ``FIXED``: the choices of this pilot procedure, run once
for every arm at 300 steps (``--pilot``, 2026-12-04, training on an H200; its rows are
``results/claim1_parity_gpu/pilot.csv``) and written here before the CPU runs: ``feature`` lr 5e-4, lambda in
{1, 3, 10, 30, 100, 300}; ``direct-split`` lr 1e-3, the same lambdas; ``direct-front`` lr 2e-4, lambda in
{0.3, 1, 3, 10, 30, 100}; ``direct-plain`` lr 1e-3, lambda in {3, 10, 30, 100, 300, 1000} (no lambda
informative: the largest six). A CPU run of 2026-12-04 (commit c3a1b56) used the grids of the first version
instead (direct-split and direct-plain at lr 5e-4, direct-plain at {1 .. 300}); it is in the git history.

``--continue-from`` extends an earlier run of this script (its ``claim1_parity.json``, same settings, on a
machine of the same kind): its hyper-parameters (its pilot's choices: fixed before this run, no new pilot), pilot
rows, RD points, BD-rates and rungs are kept, the budgets it ran are not run again, and the time guard starts
from its last rung's rate. So the ladder can be finished in a later device lease (``CONTINUE_FROM`` in
``experiments/gpu_claim1.sh``); the record lists both commands.

Verdict rule (fixed before the run), per direct arm at the largest budget that was run: "supported" when the
95 % bootstrap interval of BD-rate(arm vs feature) lies inside +-20 %; "not supported" when the interval lies
entirely outside it (or excludes 0 with |BD-rate| > 20 %); otherwise "inconclusive". When no BD-rate exists
(the top-1 ranges do not overlap enough), the same rule on BD-top1 (points of top-1 at equal rate) with +-2
points. Claim (i) as a whole: "supported" when at least one direct arm is supported (a direct codec reaches
the split codec's RD: equal minimal rates), "not supported" when every arm is not supported, otherwise
"inconclusive". ``direct-split``'s parity is partly by construction (at the same lr, half of its steps are
the feature codec's); what it tests is whether training the whole encoder from there moves it away. The
report gives the gap per budget per arm (``gap.png``) and whether it shrinks; ``claim1_seeds.sh`` reruns the
deciding arms with other training seeds.

Usage: ``python experiments/claim1_parity.py --output DIR [--quick] [--seed S] [--jobs J] [--eval-jobs J]
[--budgets 300,1200,4800] [--scale F] [--pilot] [--device cpu|auto|cuda] [--max-wall S] [--arms a,b]
[--continue-from EARLIER/claim1_parity.json]``;
writes ``DIR/rd_points.csv``, ``DIR/bd_rate.csv``, ``DIR/pilot.csv`` (with ``--pilot``),
``DIR/claim1_parity.json``, ``DIR/rd.png``, ``DIR/gap.png``, ``DIR/REPORT_section.md``, the training YAMLs in
``DIR/configs/`` and the harness runs in ``DIR/eval/s<steps>/``.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CUT, DISTILL, DISTORTION = "block2", "output", "kl"
ARCH = {"N": 48, "M": 96, "entropy": "hyperprior", "res_blocks": 2}
FRONT_INIT = "vcm-hyperprior-q2"
ANCHOR = "feature"
#: arm -> training kind, network, start, harness codec and title (the order of the tables and figures)
ARMS: dict[str, dict[str, Any]] = {
    "feature": {"kind": "feature", "arch": {**ARCH, "down": 1}, "codec": "feature-learned",
                "title": "model splitting: learned feature codec of Y1", "color": "tab:blue"},
    "direct-split": {"kind": "direct", "arch": {**ARCH, "down": 3, "encoder": "front"}, "freeze_fraction": 0.5,
                     "codec": "direct", "color": "tab:green",
                     "title": "direct, split-codec start: front copy (frozen 1st half) + feature analysis"},
    "direct-front": {"kind": "direct", "arch": {**ARCH, "down": 4, "decoder": "front"}, "init": FRONT_INIT,
                     "codec": "direct", "color": "tab:purple",
                     "title": f"direct, `front` latent decoder from the zoo image codec {FRONT_INIT}"},
    "direct-plain": {"kind": "direct", "arch": {**ARCH, "down": 3, "decoder": "plain"}, "codec": "direct",
                     "color": "tab:red", "title": "direct, plain latent decoder from scratch"},
}
LADDER = [300, 1200, 4800]
TOLERANCE = 20.0  # percent of BD-rate, verdict rule
TOLERANCE_TOP1 = 2.0  # points of BD-top1, verdict rule when no BD-rate
_GRID = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0]
_PILOTED = "the pilot procedure (--pilot, 300 steps, results/claim1_parity_gpu/pilot.csv)"
FIXED = {"feature": {"lr": 5e-4, "lmbdas": _GRID, "source": _PILOTED},
         "direct-split": {"lr": 1e-3, "lmbdas": _GRID, "source": _PILOTED},
         "direct-front": {"lr": 2e-4, "lmbdas": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0], "source": _PILOTED},
         "direct-plain": {"lr": 1e-3, "lmbdas": [3.0, 10.0, 30.0, 100.0, 300.0, 1000.0], "source": _PILOTED}}
PILOT = {"lrs": [2e-4, 5e-4, 1e-3], "lr_lmbdas": [3.0, 30.0, 300.0],
         "lmbdas": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0], "agreement": 0.3, "val_count": 200}
FULL = {"budgets": LADDER[:2], "n_lmbdas": 6, "max_images": 500, "bootstrap": 300, "warmup_steps": 50,
        "batch_size": 16, "val_count": 16}
QUICK = {"budgets": [6, 12], "n_lmbdas": 4, "max_images": 20, "bootstrap": 20, "warmup_steps": 2, "batch_size": 8,
         "val_count": 4}
QUICK_FIXED = {"lr": 5e-4, "lmbdas": [0.3, 1.0, 3.0, 10.0], "source": "quick smoke test"}
QUICK_PILOT = {"lrs": [5e-4, 1e-3], "lr_lmbdas": [1.0, 10.0], "lmbdas": [0.3, 1.0, 3.0, 10.0, 30.0],
               "agreement": 0.3, "val_count": 4}
MARGIN_S = 15.0  # the time guard's margin for the records and figures at the end
PILOT_EVAL_S_PER_POINT = 2.0  # the guard's evaluation estimate before any rung was evaluated (500 images, 16 cores)


def train_config(arm: str, lmbda: float, steps: int, lr: float, cfg: dict[str, Any], args: Any,
                 val_count: int | None = None) -> dict[str, Any]:
    """The ``vcm train direct|feature`` config of one (arm, lambda, budget, lr)."""
    spec = ARMS[arm]
    data = C.cifar_data(args.cifar_root, 32, cfg["batch_size"], args.quick)
    data["val_count"] = val_count or cfg["val_count"]
    extra: dict[str, Any] = {}
    if spec.get("init"):
        extra["init_image_codec"] = spec["init"]
    if spec.get("freeze_fraction"):
        extra["front_frozen_steps"] = int(steps * spec["freeze_fraction"])
    return {"kind": spec["kind"], "task_model": C.TASK_MODEL, "cut": CUT, "distill": DISTILL,
            "distortion": DISTORTION, "lmbda": lmbda, "arch": spec["arch"], **extra, "data": data, "steps": steps,
            "lr": lr, "warmup_steps": min(C.scaled(cfg["warmup_steps"], args.scale), steps // 4), "seed": args.seed,
            "threads": args.threads, "checkpoint_every": steps, "val_every": steps, **C.device_key(args)}


def verdict(entry: dict[str, Any]) -> str:
    """The fixed rule of the module docstring on one BD entry."""
    if entry["bd_rate_pct"] is not None:
        value, ci, tol, how = entry["bd_rate_pct"], entry["ci95"], TOLERANCE, ""
    elif entry.get("bd_top1_pts") is not None:
        value, ci, tol, how = entry["bd_top1_pts"], entry.get("ci95_top1"), TOLERANCE_TOP1, " (by BD-top1)"
    else:
        return "inconclusive (no BD value)"
    lo, hi = ci or (value, value)
    if -tol <= lo and hi <= tol:
        return "supported" + how
    if hi < -tol or lo > tol or (abs(value) > tol and (hi < 0 or lo > 0)):
        return "not supported" + how
    return "inconclusive" + how


def overall(verdicts: dict[str, str]) -> str:
    """Claim (i) from the per-arm verdicts (module docstring): supported by one arm, not supported by all."""
    if any(v.startswith("supported") for v in verdicts.values()):
        return "supported (" + ", ".join(a for a, v in verdicts.items() if v.startswith("supported")) + ")"
    if verdicts and all(v.startswith("not supported") for v in verdicts.values()):
        return "not supported (every direct arm)"
    return "inconclusive"


def fit_rung(arms: list[str], hp: dict[str, dict[str, Any]], steps: int, prev: dict[str, Any], elapsed: float,
             max_wall: float) -> tuple[list[str], str]:
    """The time guard (module docstring): the arms of the next rung that end before ``max_wall`` -- all, else
    ``feature`` with the first direct arms in :data:`ARMS` order, else none -- and why. Estimates: training
    the previous rung's seconds per step (all its runs) times the new steps; evaluation its seconds per point."""
    per_step = prev["train_s"] / max(1, prev["runs"] * prev["steps"])
    per_point = prev["eval_s"] / prev["points"] if prev["points"] else PILOT_EVAL_S_PER_POINT  # after the pilot

    def estimate(subset: list[str]) -> float:
        points = sum(len(hp[a]["lmbdas"]) for a in subset)
        return per_step * points * steps + per_point * points

    for n in range(len(arms), 1, -1):
        need = estimate(arms[:n])
        if elapsed + need + MARGIN_S <= max_wall:
            why = "" if n == len(arms) else (f"time guard: all arms need about {estimate(arms):.0f} s after "
                                             f"{elapsed:.0f} s, over --max-wall {max_wall:.0f} s; these need "
                                             f"about {need:.0f} s")
            return arms[:n], why
    return [], (f"time guard: {elapsed:.0f} s elapsed + about {estimate(arms[:2]):.0f} s estimated for {steps} steps "
                f"of even two arms > --max-wall {max_wall:.0f} s")


def continued(path: Path, cfg: dict[str, Any], arms: list[str], budgets: list[int]) -> dict[str, Any]:
    """The earlier run ``path`` (a claim1_parity.json) that ``--continue-from`` extends; SystemExit naming what
    differs when its settings are not this run's (other evaluation images, bootstrap, arms, ...)."""
    try:
        earlier = C.read_json(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--continue-from {path}: cannot be read ({exc})") from None
    if not isinstance(earlier, dict) or earlier.get("experiment") != "claim1_parity":
        raise SystemExit(f"--continue-from {path}: not a claim1_parity.json")
    old = earlier["config"]
    differ = [k for k in ("n_lmbdas", "max_images", "bootstrap", "warmup_steps", "batch_size", "val_count", "scale",
                          "cut", "distill", "distortion") if old.get(k) != cfg.get(k)]
    missing = [a for a in arms if a not in old.get("hyperparameters", {})]
    if bool(earlier.get("quick")) != bool(cfg.get("quick")):
        differ.append("quick")
    if differ or missing:
        raise SystemExit(f"--continue-from {path}: other settings ({', '.join(differ) or 'arms'}"
                         f"{'; arms not in it: ' + ', '.join(missing) if missing else ''})")
    if not set(budgets) - set(old["budgets_run"]):
        raise SystemExit(f"--continue-from {path}: it already ran budgets {old['budgets_run']}; nothing left of "
                         f"{budgets}")
    return earlier


def choose_lr(points: dict[float, list[dict[str, Any]]]) -> float:
    """Pilot step 1: lr -> its runs' results; the lr with the lowest mean log(validation loss) (ties: smaller)."""
    def score(results: list[dict[str, Any]]) -> float:
        losses = [r["val"].get("loss", math.inf) if "failed" not in r else math.inf for r in results]
        return math.inf if any(not math.isfinite(v) or v <= 0 for v in losses) else \
            sum(math.log(v) for v in losses) / len(losses)

    return min(points, key=lambda lr: (score(points[lr]), lr))


def choose_grid(lmbdas: list[float], agreement: list[float | None], n: int, threshold: float) -> list[float]:
    """Pilot step 2: the ``n`` consecutive lambdas starting one below the smallest informative one (module
    docstring); ``agreement`` per lambda (None: failed run)."""
    n = min(n, len(lmbdas))
    good = [i for i, a in enumerate(agreement) if a is not None and a >= threshold]
    start = len(lmbdas) - n if not good else min(max(0, good[0] - 1), len(lmbdas) - n)
    return lmbdas[start:start + n]


def run_pilot(arms: list[str], budget: int, cfg: dict[str, Any], args: Any, out: Path, pool: Any,
              log: Any) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The pilot procedure of the module docstring for every arm; (arm -> {lr, lmbdas, source}, pilot rows)."""
    P = QUICK_PILOT if args.quick else PILOT

    def runs(arm: str, lr: float, lmbdas: list[float]) -> list[C.TrainRun]:
        return [C.TrainRun(f"pilot-{arm}-lr{lr:g}-l{lm:g}", ARMS[arm]["kind"],
                           train_config(arm, lm, budget, lr, cfg, args, val_count=P["val_count"])) for lm in lmbdas]

    log(f"pilot, step 1 (lr): {len(arms)} arms x lr {P['lrs']} x lambda {P['lr_lmbdas']}, {budget} steps")
    step1 = {arm: {lr: runs(arm, lr, P["lr_lmbdas"]) for lr in P["lrs"]} for arm in arms}
    done = C.train_runs([r for a in step1.values() for rs in a.values() for r in rs], out, args.jobs, log, pool,
                        tolerate=True)
    lrs = {arm: choose_lr({lr: [done[r.name] for r in rs] for lr, rs in step1[arm].items()}) for arm in arms}
    log("pilot lr: " + ", ".join(f"{a} {lr:g}" for a, lr in lrs.items()))
    log(f"pilot, step 2 (lambda): lambda {P['lmbdas']} at each arm's lr")
    step2 = {arm: runs(arm, lrs[arm], P["lmbdas"]) for arm in arms}
    done.update(C.train_runs([r for rs in step2.values() for r in rs], out, args.jobs, log, pool, tolerate=True))
    chosen, rows = {}, []
    for arm in arms:
        agree = [None if "failed" in done[r.name] else done[r.name]["val"].get("top1_agreement") for r in step2[arm]]
        grid = choose_grid(P["lmbdas"], agree, cfg["n_lmbdas"], P["agreement"])
        chosen[arm] = {"lr": lrs[arm], "lmbdas": grid, "source": f"pilot ({budget} steps, this run)"}
        for lr, rs in step1[arm].items():
            rows += [pilot_row(arm, "lr", lr, r, done[r.name]) for r in rs]
        rows += [pilot_row(arm, "lambda", lrs[arm], r, done[r.name]) for r in step2[arm]]
        log(f"pilot {arm}: lr {lrs[arm]:g}, lambda grid {grid}")
    return chosen, rows


def pilot_row(arm: str, step: str, lr: float, run: C.TrainRun, result: dict[str, Any]) -> dict[str, Any]:
    val = result.get("val", {})
    return {"arm": arm, "step": step, "lr": lr, "lmbda": run.config["lmbda"], "steps": run.config["steps"],
            "val_bpp": val.get("bpp"), "val_top1_agreement": val.get("top1_agreement"), "val_loss": val.get("loss"),
            "train_wall_s": result.get("wall_s"), "failed": result.get("failed", "")}


def main(argv: list[str] | None = None) -> int:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--lmbdas", help="comma-separated lambda grid for every arm (pilots; default: per arm)")
    parser.add_argument("--budgets", help="comma-separated step budgets before --scale (default 300,1200; the "
                                          "ladder is 300,1200,4800)")
    parser.add_argument("--max-images", type=int, help="evaluation images (default 500)")
    parser.add_argument("--lr", type=float, help="learning rate of every arm (pilots; default: per arm)")
    parser.add_argument("--arms", help=f"comma-separated subset of {list(ARMS)} (always with {ANCHOR!r})")
    parser.add_argument("--pilot", action="store_true", help="choose lr and lambda grid per arm by the pilot "
                                                             "procedure of the docstring first")
    parser.add_argument("--eval-jobs", type=int, help="harness workers (default: --jobs)")
    parser.add_argument("--max-wall", type=float, help="time guard in seconds: skip rungs that would end later")
    parser.add_argument("--continue-from", type=Path, help="an earlier run's claim1_parity.json to extend (docstring)")
    args = parser.parse_args(argv)
    if args.continue_from and args.pilot:
        parser.error("--continue-from keeps the earlier run's pilot choices; --pilot cannot be given with it")
    out, log = C.setup(args)
    if args.replot:
        info = C.read_json(out / "claim1_parity.json")
        figure(info, out / "rd.png")
        gap_figure(info, out / "gap.png")
        return 0
    start = time.perf_counter()
    cfg = dict(QUICK if args.quick else FULL)
    arms = [ANCHOR] + [a for a in (args.arms.split(",") if args.arms else ARMS) if a != ANCHOR]
    if any(a not in ARMS for a in arms):
        parser.error(f"--arms: unknown arm in {arms}; known: {list(ARMS)}")
    budgets = [C.scaled(int(v), args.scale) for v in (args.budgets.split(",") if args.budgets else cfg["budgets"])]
    if args.max_images:
        cfg["max_images"] = args.max_images
    eval_jobs = args.eval_jobs or args.jobs
    machine_start = C.machine()
    hp = {arm: dict(QUICK_FIXED if args.quick else FIXED[arm]) for arm in arms}
    pilot_rows: list[dict[str, Any]] = []
    rows, bds, rungs, skipped, results = [], [], [], [], {}
    uncompressed = math.nan
    settings = {**cfg, "quick": args.quick, "scale": args.scale, "cut": CUT, "distill": DISTILL,
                "distortion": DISTORTION}
    earlier = continued(args.continue_from, settings, arms, budgets) if args.continue_from else None
    if earlier is not None:
        chosen = earlier["config"]["hyperparameters"]
        hp = {arm: {**chosen[arm], "source": chosen[arm]["source"].replace("this run", "the continued run")}
              for arm in arms}
        pilot_rows, rows, bds = list(earlier["pilot"]), list(earlier["rd_points"]), list(earlier["bd"])
        rungs = [{**r, "run": "continued"} for r in earlier["rungs"]]
        ran = set(earlier["config"]["budgets_run"])
        skipped = [s for s in earlier["skipped"] if s["steps"] in ran]  # arms the time guard left out there
        uncompressed = earlier["uncompressed_top1"]
        budgets = sorted(set(budgets) - ran)
        log(f"continuing {args.continue_from}: budgets {sorted(ran)} kept, {budgets} to run")
    with C.worker_pool(args.jobs) as pool:
        if args.pilot:
            t0 = time.perf_counter()
            hp, pilot_rows = run_pilot(arms, budgets[0], cfg, args, out, pool, log)
            wall_pilot = round(time.perf_counter() - t0, 1)
            rungs.append({"phase": "pilot", "wall_s": wall_pilot, "train_s": wall_pilot, "steps": budgets[0],
                          "runs": len({r["arm"] + str(r["lr"]) + str(r["lmbda"]) for r in pilot_rows}),
                          "eval_s": 0.0, "points": 0})
        for arm in arms:
            hp[arm]["lr"] = args.lr or hp[arm]["lr"]
            hp[arm]["lmbdas"] = [float(v) for v in args.lmbdas.split(",")] if args.lmbdas else hp[arm]["lmbdas"]
        done_rungs = list(rungs)  # the pilot's rate also guards the first rung
        for k, steps in enumerate(budgets):
            prev = done_rungs[-1] if done_rungs else None
            rung_arm_list = arms
            if args.max_wall and prev is not None:
                fits, why = fit_rung(arms, hp, steps, prev, time.perf_counter() - start, args.max_wall)
                if not fits:
                    skipped += [{"steps": s, "reason": why} for s in budgets[k:]]
                    log(f"skipping budgets {budgets[k:]}: {why}")
                    break
                if len(fits) < len(arms):
                    skipped.append({"steps": steps, "arms": arms[len(fits):], "reason": why})
                    log(f"{steps} steps: only {fits}: {why}")
                rung_arm_list = fits
            rung_arms, runs = {}, []
            for arm in rung_arm_list:
                label = f"{arm}-s{steps}"
                names = [f"{label}-q{q}" for q in range(1, len(hp[arm]["lmbdas"]) + 1)]
                runs += [C.TrainRun(n, ARMS[arm]["kind"], train_config(arm, lm, steps, hp[arm]["lr"], cfg, args))
                         for n, lm in zip(names, hp[arm]["lmbdas"])]
                rung_arms[label] = {"arm": arm, "runs": names, "lmbdas": hp[arm]["lmbdas"], "steps": steps}
            heavy = [r for r in runs if r.name.startswith("direct-front")]  # the slowest first: the pool stays busy
            t0 = time.perf_counter()
            results.update(C.train_runs(heavy + [r for r in runs if r not in heavy], out, args.jobs, log, pool,
                                        tolerate=True))
            train_s = time.perf_counter() - t0
            codecs = {}
            for label, arm in rung_arms.items():
                ok = [q for q, n in enumerate(arm["runs"], 1) if "failed" not in results[n]]
                if ok:
                    codecs[label] = {"codec": ARMS[arm["arm"]]["codec"], "task_model": C.TASK_MODEL, "cut": CUT,
                                     "checkpoint": str(out / "train" / f"{label}-q{{quality}}" / "model.pt"),
                                     "qualities": ok, "threads": 1}
            ev = C.evaluate(codecs, out, args.cifar_root, cfg["max_images"], eval_jobs, log, name=f"s{steps}")
            uncompressed = ev["uncompressed_top1"] if math.isnan(uncompressed) else uncompressed
            rung_rows = C.rd_rows(rung_arms, ev, results)
            for row in rung_rows:
                row["arm_name"] = rung_arms[row["arm"]]["arm"]
            rows += rung_rows
            for arm in rung_arm_list[1:]:
                entry = C.bd_entry(C.arm_points(rows, f"{ANCHOR}-s{steps}"), C.arm_points(rows, f"{arm}-s{steps}"),
                                   f"{ANCHOR}-s{steps}", f"{arm}-s{steps}", ev["per_image"], cfg["bootstrap"],
                                   args.seed)
                bds.append({"arm": arm, "budget_steps": steps, **entry, "verdict_at_budget": verdict(entry)})
                log(f"{steps} steps, {arm} vs {ANCHOR}: {C.fmt_both(bds[-1])}")
            rung = {"phase": "rung", "steps": steps, "train_s": round(train_s, 1), "eval_s": ev["wall_s"],
                    "runs": len(runs), "points": sum(len(c["qualities"]) for c in codecs.values()),
                    "arms": rung_arm_list}
            rungs.append(rung)
            done_rungs.append(rung)
            log(f"rung {steps} steps: training {train_s:.0f} s ({len(runs)} runs), evaluation {ev['wall_s']:.0f} s")
    C.write_rd(rows, out)
    write_bd_csv(bds, out)
    if pilot_rows:
        with open(out / "pilot.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(pilot_rows[0]))
            writer.writeheader()
            writer.writerows(pilot_rows)
    largest = max((b["budget_steps"] for b in bds), default=None)
    per_arm = {b["arm"]: f"{b['verdict_at_budget']} at {b['budget_steps']} steps" for b in bds}  # its largest budget
    final = overall(per_arm)
    wall = time.perf_counter() - start
    info = {"experiment": "claim1_parity", "claim": "(i) Theorem 1: direct coding = model splitting in task RD",
            "quick": args.quick, "seed": args.seed,
            "config": {**cfg, "budgets": budgets, "budgets_run": [r["steps"] for r in rungs if r["phase"] == "rung"],
                       "scale": args.scale, "cut": CUT, "distill": DISTILL, "distortion": DISTORTION,
                       "arms": {a: {k: v for k, v in ARMS[a].items() if k != "color"} for a in arms},
                       "hyperparameters": hp, "pilot": (QUICK_PILOT if args.quick else PILOT) if args.pilot else None,
                       "tolerance_pct": TOLERANCE, "tolerance_top1_pts": TOLERANCE_TOP1, "jobs": args.jobs,
                       "eval_jobs": eval_jobs, "threads": args.threads, "device": args.device,
                       "max_wall_s": args.max_wall},
            "training_configs": {**(earlier or {}).get("training_configs", {}),
                                 **{n: f"configs/{n}.yaml" for n in sorted(results)}},
            "rd_points": rows, "pilot": pilot_rows, "uncompressed_top1": uncompressed, "bd": bds,
            "verdicts": per_arm, "verdict": final, "largest_budget": largest, "skipped": skipped, "rungs": rungs,
            "wall_s": {"total": round(wall, 1), "training": round(sum(r.get("train_s", r.get("wall_s", 0))
                                                                        for r in rungs), 1),
                       "evaluation": round(sum(r.get("eval_s", 0) for r in rungs), 1)},
            "machine": {"start": machine_start, "end": C.machine(), "training_device": train_device(results)},
            "command": C.command_line(argv)}
    if earlier is not None:
        info["continued"] = {"file": str(args.continue_from), "command": earlier["command"],
                             "wall_s": earlier["wall_s"], "machine": earlier["machine"]}
    C.write_json(out / "claim1_parity.json", info)
    figure(info, out / "rd.png")
    gap_figure(info, out / "gap.png")
    (out / "REPORT_section.md").write_text(report(info))
    log(f"claim (i): {final}; " + "; ".join(f"{a}: {v}" for a, v in per_arm.items()) + f" ({wall:.0f} s)")
    return 0


def train_device(results: dict[str, dict]) -> str:
    """The device the training runs report (``result.json``), e.g. 'cpu' or 'cuda:0 (NVIDIA H200)'."""
    devices = sorted({r.get("device", "cpu") for r in results.values() if "failed" not in r})
    return ", ".join(devices) or "n/a"


def write_bd_csv(bds: list[dict[str, Any]], out: Path) -> None:
    with open(out / "bd_rate.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["budget_steps", "test", "anchor", "bd_rate_pct", "ci95_low", "ci95_high", "bd_top1_pts",
                         "ci95_top1_low", "ci95_top1_high", "overlap", "verdict_at_budget", "note"])
        for b in bds:
            ci, ct = b["ci95"] or ["", ""], b.get("ci95_top1") or ["", ""]
            writer.writerow([b["budget_steps"], b["test"], b["anchor"], "" if b["bd_rate_pct"] is None
                             else b["bd_rate_pct"], ci[0], ci[1], "" if b["bd_top1_pts"] is None
                             else b["bd_top1_pts"], ct[0], ct[1], "" if b["overlap"] is None else b["overlap"],
                             b["verdict_at_budget"], note(b)])


def note(b: dict[str, Any]) -> str:
    return "; ".join(filter(None, [b["note"], *(["envelope dropped " + ", ".join(b["dropped"])]
                                                  if b["dropped"] else [])]))


def figure(info: dict[str, Any], path: Path) -> None:
    """RD curves of every arm (solid: the largest budget run, dashed: the smaller ones) from the JSON record."""
    rows, largest = info["rd_points"], info.get("largest_budget")
    curves = []
    for label in dict.fromkeys(r["arm"] for r in rows):
        arm, steps = label.rsplit("-s", 1)
        style = {"color": ARMS.get(arm, {}).get("color", "0.3")}
        if int(steps) != largest:
            style.update(ls="--", alpha=0.55, marker="s", markersize=3)
        curves.append((f"{arm}, {steps} steps", C.arm_points(rows, label), style))
    C.plot_rd(curves, info["uncompressed_top1"], path, f"Claim (i) parity: cifar10-vgg cut {CUT}, KL at the output "
              f"({info['config']['max_images']} CIFAR-10 test images)")


def gap_figure(info: dict[str, Any], path: Path) -> None:
    """The gap to model splitting per budget, per direct arm: BD-rate (left) and BD-top1 (right) with their
    bootstrap intervals and the parity band of the verdict rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bds = info["bd"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    panels = ((axes[0], "bd_rate_pct", "ci95", TOLERANCE, "BD-rate vs model splitting (%)\n(< 0: fewer bits)"),
              (axes[1], "bd_top1_pts", "ci95_top1", TOLERANCE_TOP1, "BD-top1 vs model splitting (points)\n"
                                                                     "(> 0: more top-1 at equal rate)"))
    budgets = sorted({b["budget_steps"] for b in bds})
    for ax, key, ci_key, tol, ylabel in panels:
        ax.axhspan(-tol, tol, color="0.85", label=f"parity band (±{tol:g})")
        ax.axhline(0, color="0.4", lw=0.8)
        for i, arm in enumerate(dict.fromkeys(b["arm"] for b in bds)):
            pts = [b for b in bds if b["arm"] == arm and b[key] is not None]
            if not pts:
                ax.plot([], [], color=ARMS.get(arm, {}).get("color"), label=f"{arm} (n/a at every budget)")
                continue
            xs = [b["budget_steps"] * (1 + 0.04 * (i - 1)) for b in pts]  # side by side
            ys = [b[key] for b in pts]
            lo = [y - (b[ci_key][0] if b.get(ci_key) else y) for y, b in zip(ys, pts)]
            hi = [(b[ci_key][1] if b.get(ci_key) else y) - y for y, b in zip(ys, pts)]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=ARMS.get(arm, {}).get("color"),
                        label=arm)
        ax.set_xscale("log")
        ax.set_xticks(budgets or [1])
        ax.set_xticklabels([str(b) for b in budgets] or [""])
        ax.minorticks_off()
        ax.set_xlabel(f"training steps (batch {info['config']['batch_size']})")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    for ax in axes:
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Claim (i): the gap of each direct-coding arm to model splitting per step budget "
                 f"(95 % image-bootstrap intervals; training on {info['machine'].get('training_device', 'cpu')})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def trend(bds: list[dict[str, Any]], arm: str) -> str:
    """'the |BD-rate| gap shrinks from 40.1 % at 300 steps to 12.0 % at 4800 steps' (or by BD-top1)."""
    pts = [b for b in bds if b["arm"] == arm]
    for key, unit, what in (("bd_rate_pct", " %", "|BD-rate|"), ("bd_top1_pts", " points", "|BD-top1|")):
        have = [b for b in pts if b[key] is not None]
        if len(have) >= 2 and len(have) == len(pts):
            a, z = abs(have[0][key]), abs(have[-1][key])
            steps = ", ".join(f"{abs(b[key]):.1f}{unit} at {b['budget_steps']}" for b in have)
            return f"{what} {'shrinks' if z < a else 'grows'} ({steps} steps)"
    return "no trend: " + ", ".join(f"{b['budget_steps']} steps {C.fmt_both(b)}" for b in pts)


def report(info: dict[str, Any]) -> str:
    """The Markdown section of claim (i)."""
    rows, bds, unc, cfg = info["rd_points"], info["bd"], info["uncompressed_top1"], info["config"]
    quick = "QUICK run (a few steps and images): a smoke test of the pipeline, not evidence. " if info["quick"] else ""
    largest, device = info["largest_budget"], info["machine"].get("training_device", "cpu")
    lines = [f"## Claim (i): Theorem 1, direct coding matches model splitting{C.trained_on(device)}", "",
             f"**Does our measurement support parity? {info['verdict']}** (rule, fixed in the script before the run: "
             f"a direct arm is at parity when the 95 % image-bootstrap interval of its BD-rate against model "
             f"splitting lies inside ±{TOLERANCE:.0f} % at the largest budget run, {largest} steps; without a BD-rate, "
             f"BD-top1 inside ±{TOLERANCE_TOP1:.0f} points; the claim is supported when one direct arm is at parity). "
             + "; ".join(f"`{a}`: {v}" for a, v in info["verdicts"].items()) + ".", "",
             f"{quick}Setup: `cifar10-vgg` cut at `{CUT}` (64x8x8); every arm trained on bpp + λ·KL at the output "
             f"through the frozen mid-model, N = 48, M = 96, scale hyperprior, batch {cfg['batch_size']}, cosine lr, "
             f"seed {info['seed']}, CIFAR-10 train images; budgets {cfg['budgets_run']} steps"
             + (f" (scale {cfg['scale']:g})" if cfg["scale"] != 1 else "")
             + f"; training on {info['machine'].get('training_device', 'cpu')}; evaluated by the harness with real "
             f"bitstreams on {cfg['max_images']} class-balanced CIFAR-10 test images (uncompressed top-1 {unc:.1f} %). "
             "BD-rate: pchip, monotone envelope, negative = the direct arm needs fewer bits than model splitting "
             f"for the same top-1; intervals: {cfg['bootstrap']} bootstrap resamples of the test images.", ""]
    if info.get("skipped"):
        lines += ["Not run: " + "; ".join(f"{s['steps']} steps" + (f" of {', '.join(s['arms'])}" if s.get("arms")
                                                                   else "") + f" ({s['reason']})"
                                          for s in info["skipped"]) + ".", ""]
    lines += ["| arm | what | lr | λ grid | chosen by |", "|---|---|---|---|---|"]
    for arm, hp in cfg["hyperparameters"].items():
        lines.append(f"| `{arm}` | {cfg['arms'][arm]['title']} | {hp['lr']:g} | {hp['lmbdas']} | {hp['source']} |")
    lines += ["", "| arm vs `feature` | budget | BD-rate [95 % CI] | BD-top1 (points) [95 % CI] | overlap | "
              "verdict at this budget | note |", "|---|---|---|---|---|---|---|"]
    for b in bds:
        lines.append(f"| `{b['arm']}` | {b['budget_steps']} | {C.fmt_bd(b)} | {C.fmt_top1(b)} | "
                     f"{'n/a' if b['overlap'] is None else format(b['overlap'], '.2f')} | {b['verdict_at_budget']} | "
                     f"{note(b) or '-'} |")
    lines += ["", "Gap against the budget: " + "; ".join(f"`{a}`: {trend(bds, a)}"
                                                         for a in dict.fromkeys(b["arm"] for b in bds)) + ".", "",
              "![claim (i) gap per budget](gap.png)", "", "![claim (i) RD curves](rd.png)", ""]
    if info.get("pilot"):
        lines += ["Pilot runs (validation with real bitstreams on images held out from CIFAR-10 train; step 'lr' "
                  "picks the lr, step 'lambda' the grid, see the script's docstring):", "",
                  "| arm | step | lr | λ | val bpp | val top-1 agreement | val loss | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in info["pilot"]:
            def f(v: Any, spec: str) -> str:
                return "n/a" if v is None else format(v, spec)
            lines.append(f"| {p['arm']} | {p['step']} | {p['lr']:g} | {p['lmbda']:g} | {f(p['val_bpp'], '.3f')} | "
                         f"{f(p['val_top1_agreement'], '.3f')} | {f(p['val_loss'], '.3f')} | {p['failed'] or '-'} |")
        lines.append("")
    lines += ["| arm | λ | bpp | top-1 % | train s |", "|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['lmbda']:g} | {r['bpp']:.4f} | {r['top1']:.1f} | {r['train_wall_s']:.0f} |"
              + (f" FAILED: {r['failed']}" if r.get("failed") else "") for r in rows]
    w = info["wall_s"]
    timing = "; ".join(("continued: " if r.get("run") == "continued" else "")
                       + (f"pilot {r['wall_s']:.0f} s" if r["phase"] == "pilot" else
                          f"{r['steps']} steps: training {r['train_s']:.0f} s ({r['runs']} runs), evaluation "
                          f"{r['eval_s']:.0f} s") for r in info["rungs"])
    lines += ["", "Files: `rd_points.csv`, `bd_rate.csv`, `claim1_parity.json`"
              + (", `pilot.csv`" if info.get("pilot") else "") + ", training YAMLs in `configs/`. Wall time "
              f"{w['total']:.0f} s ({timing}) with {cfg['jobs']} training processes of {cfg['threads']} thread(s) "
              f"and {cfg['eval_jobs']} harness workers on {info['machine']['end']['description']}; load average at "
              f"the end {info['machine']['end']['loadavg']}.", ""]
    if info.get("continued"):
        c = info["continued"]
        lines[-1:] = [f"The budgets marked as continued ran in an earlier invocation (`{c['command']}`, "
                      f"{c['wall_s']['total']:.0f} s on {c['machine']['end']['description']}); this one "
                      f"(`{info['command']}`) kept its hyper-parameters, RD points and BD-rates and ran the rest.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
