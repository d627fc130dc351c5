"""Run every experiment of the paper's claims and assemble ``experiments/REPORT.md`` (``make experiments``).

Steps, each a script of this folder run as a subprocess into ``<results>/<name>/`` (its own log in
``<results>/<name>.log``): ``toy_fig2`` (paper Fig. 2 toy), ``claim1_parity`` (i), ``claim2_supervised``
(ii), ``claim3_depth`` (iii), ``claim4_rho`` (iv), ``claims_detector`` ((i)-(iii) on YOLOv5n). Then every
step's ``REPORT_section.md`` is copied into the report (relative links rewritten to ``results/<name>/...``,
the step's figures linked), under a header with the machine, date, git commit, total wall time, seeds,
scale and load average, and a summary table of the verdicts read from each step's JSON. A step that fails is
reported as failed (with its log's tail); the others still run, and the exit status is 1.

Usage: ``python experiments/run_all.py [--quick] [--seed S] [--jobs J] [--results DIR] [--report FILE]
[--only name,name] [--report-only]``. Full scale takes about 1 h 45 min on 2 cores (``--jobs 2``): 6,115 s as the
sum of the steps' own measured runs in ``results/run_all.json`` (claim (i)'s four arms at 300 and 1,200 steps
946 s, the detector claims 3,330 s: 29 runs of 600 steps in 2,554 s, then 206 COCO images x 33 points; the other
steps 1,838 s), measured in separate ``--only`` invocations on two 2-core machines, not in one run.
``experiments/gpu_claim1.sh`` runs claim (i)'s whole ladder on a GPU machine, into a folder reported beside
claim (i) once committed as ``results/claim1_parity_gpu/``; ``claims_detector.py --train-only --device cuda``
there and ``--eval-only`` here give ``results/claims_detector_gpu/``, reported beside the detector step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: the reading of the results, written by hand after the runs (quoted under the summary when it exists)
INTERPRETATION = HERE / "INTERPRETATION.md"
STEPS = {  # name -> (title in the summary, takes --jobs)
    "toy_fig2": ("Fig. 2 toy: 1-bit MSE quantiser at the input vs a hidden layer", False),
    "claim1_parity": ("(i) Theorem 1: direct coding = model splitting", True),
    "claim2_supervised": ("(ii) supervised beats unsupervised", True),
    "claim3_depth": ("(iii) deeper distillation is better", True),
    "claim4_rho": ("(iv) task appropriateness ρ rises with depth", False),
    "claims_detector": ("(i)-(iii) on the detector: YOLOv5n cut after layer 4, COCO box AP", True),
}
#: result folders made elsewhere and committed (not run here), reported after their step when they exist:
#: folder -> (title in the summary, the step whose script wrote it)
EXTRA = {"claim1_parity_gpu": ("(i) Theorem 1 at GPU scale (`experiments/gpu_claim1.sh`, committed results)",
                               "claim1_parity"),
         "claims_detector_gpu": ("(i)-(iii) on the detector, trained on a GPU (`--train-only --device cuda`), "
                                 "evaluated here (committed results)", "claims_detector")}


def run_step(name: str, args: argparse.Namespace, results: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Run one script into ``results/name``; returns {name, rc, wall_s, log} and this invocation's date, commit
    and machine (``run``): a partial rerun (``--only``) keeps the other steps' own records."""
    out = results / name
    cmd = [sys.executable, str(HERE / f"{name}.py"), "--output", str(out), "--seed", str(args.seed),
           "--threads", "1"]
    if args.quick:
        cmd.append("--quick")
    if STEPS[name][1] and args.jobs:
        cmd += ["--jobs", str(args.jobs)]
    log = results / f"{name}.log"
    print(f"[run_all {time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}).returncode
    wall = time.perf_counter() - start
    print(f"[run_all {time.strftime('%H:%M:%S')}] {name}: exit {rc} after {wall:.0f} s", flush=True)
    from _common import portable  # committed records name no machine's folders

    return {"name": name, "rc": rc, "wall_s": round(wall, 1), "log": portable(str(log), ROOT), **run}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary_row(name: str, folder: Path) -> tuple[str, str]:
    """(verdict, key numbers) of one step from its JSON; ('not run / failed', '') when it is missing."""
    from _common import fmt_both  # the experiments folder is on sys.path

    data = _read_json(folder / f"{name}.json")
    if data is None:
        return "not run / failed", ""
    if name == "toy_fig2":
        return ("ρ(hidden) > ρ(input): " + ("yes" if data["rho_hidden_greater"] else "no"),
                f"ρ(input) {data['rho_input']['rho']:.3f}, ρ(hidden) {data['rho_hidden']['rho']:.3f}")
    if name == "claim1_parity":  # each direct arm against model splitting at the largest budget it ran
        last = {b.get("arm", "direct"): b for b in data["bd"]}
        return data["verdict"], "; ".join(f"{arm} vs feature, {b['budget_steps']} steps: {fmt_both(b)}"
                                          for arm, b in last.items())
    if name == "claim2_supervised":
        return data["verdict"], f"supervised vs unsupervised: {fmt_both(data['bd'])}"
    if name == "claim3_depth":
        return data["verdict"], "; ".join(f"{b['point']} vs Y1: {fmt_both(b)}" for b in data["bd"])
    if name == "claim4_rho":
        sections = data.get("sections", {})
        return ("; ".join(f"{s}: {v.get('verdict', '?')}" for s, v in sections.items()),
                "; ".join(f"{s}: Spearman " + ", ".join(f"k={t['k']} {t['spearman']:+.2f}" for t in v.get("trends", []))
                          for s, v in sections.items()))
    if name == "claims_detector":
        return ("; ".join(f"({c}) {v}" for c, v in data["verdicts"].items()),
                "; ".join(f"({b['claim']}) {b['test']} vs {b['anchor']}: {fmt_both(b)}" for b in data["bd"]))
    return "?", ""


_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def section_text(name: str, folder: Path, results_rel: str, step: dict[str, Any] | None) -> str:
    """The step's REPORT_section.md with links made relative to the report, its figures linked, or a failure."""
    path = folder / "REPORT_section.md"
    prefix = f"{results_rel}/{name}"
    if not path.exists() or (step is not None and step["rc"] != 0):
        tail = ""
        if step is not None:
            try:
                tail = "\n".join((ROOT / step["log"]).read_text().strip().splitlines()[-8:])
            except OSError:
                tail = "(no log)"
        title = STEPS[name][0]
        return (f"## {title}\n\n**FAILED / not run** (exit {step['rc'] if step else 'n/a'}); the claim is not "
                f"assessed here. Last lines of the log:\n\n```\n{tail}\n```\n")
    text = path.read_text()

    def fix(m: re.Match[str]) -> str:
        target = m.group(2)
        if re.match(r"^[a-z]+:|^/|^#", target):
            return m.group(0)
        return f"{m.group(1)}{prefix}/{target}{m.group(3)}"

    text = _LINK.sub(fix, text)
    linked = set(re.findall(r"\]\(([^)\s]+\.png)\)", text))
    figures = sorted(p for p in folder.rglob("*.png") if not ({"eval", "train"} & set(p.relative_to(folder).parts)))
    extra = [f"![{p.relative_to(folder)}]({prefix}/{p.relative_to(folder).as_posix()})" for p in figures
             if f"{prefix}/{p.relative_to(folder).as_posix()}" not in linked]
    if extra:
        text = text.rstrip() + "\n\nFigures: " + "\n\n" + "\n\n".join(extra) + "\n"
    return text.rstrip() + "\n"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        return head
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def step_provenance(steps: dict[str, dict[str, Any]], info: dict[str, Any]) -> list[str]:
    """Header lines naming each step's own date, commit and machine when not every step comes from this run
    (partial reruns with ``--only``); none when they all do."""
    own = {n: (s.get("date", "unknown"), s.get("commit", "unknown"), s.get("machine", "unknown"))
           for n, s in steps.items()}
    if all(v == (info["date"], info["commit"], info["machine"]) for v in own.values()):
        return []
    return ["- The steps come from different invocations (partial reruns with `--only`); the lines above describe "
            "the last one. Each step's own run:",
            *(f"  - {n}: {date}, commit {commit}, {machine}" for n, (date, commit, machine) in own.items())]


def assemble(args: argparse.Namespace, results: Path, report: Path, steps: dict[str, dict[str, Any]],
             info: dict[str, Any]) -> str:
    """The report's text for the file ``report`` (its links relative to it), from ``results``, the steps'
    records and the run's ``info``; nothing is written."""
    results_rel = os.path.relpath(results, report.parent)
    scale = "QUICK (smoke test: tiny steps and image counts; NOT evidence for or against any claim)" if args.quick \
        else "full (the scale each section states; small CPU budgets, not the paper's)"
    total = info.get("total_wall_s")
    lines = ["# Experiments: the claims of Harell et al., *Rate-Distortion Theory in Coding for Machines*", "",
             "Generated by `make experiments` (`python experiments/run_all.py`); every number below comes from the "
             "JSON / CSV files under the linked result folders. Our measurements, at our (small, CPU-only) scale, "
             "on the project's own CIFAR-10 classifier `cifar10-vgg` (top-1 about 80 %), not the paper's models.", "",
             f"- Date: {info['date']}",
             f"- Machine: {info['machine']}",
             f"- Load average (1, 5, 15 min) at start {info['load_start']}, at end {info.get('load_end', 'n/a')} "
             "(another job may have shared the CPUs)",
             f"- Git commit: {info['commit']}",
             f"- Scale: {scale}",
             f"- Seeds: {args.seed} for every step (training, data order, k-means, bootstrap)"
             + ("" if args.quick else "; the toy also reports 9 more seeds"),
             f"- Total wall time: {'n/a' if total is None else f'{total:.0f} s ({total / 60:.1f} min)'}; per step: "
             + ", ".join(f"{n} {s['wall_s']:.0f} s" + ("" if s["rc"] == 0 else f" (FAILED, exit {s['rc']})")
                         for n, s in steps.items()),
             f"- Command: `{info['command']}`", *step_provenance(steps, info), "",
             "## Summary", "", "| claim | does our measurement support it? | numbers |", "|---|---|---|"]
    extras = {base: [(folder, title) for folder, (title, b) in EXTRA.items() if b == base
                     and (results / folder / "REPORT_section.md").exists()] for base in STEPS}
    for name, (title, _) in STEPS.items():
        verdict, numbers = summary_row(name, results / name)
        lines.append(f"| {title} | {verdict} | {numbers} |")
        for folder, extra_title in extras[name]:
            verdict, numbers = summary_row(name, results / folder)
            lines.append(f"| {extra_title} | {verdict} | {numbers} |")
    lines += ["", "Verdict rules are fixed in each script's docstring before the run (bootstrap intervals over the "
              "test images); BD-rate: negative = fewer bits for the same top-1.", ""]
    if INTERPRETATION.exists() and not args.quick:  # the developers' reading of the full-scale results
        lines += [INTERPRETATION.read_text().strip(), ""]
    for name in STEPS:
        lines.append(section_text(name, results / name, results_rel, steps.get(name)))
        for folder, _ in extras[name]:
            lines.append(section_text(folder, results / folder, results_rel, None))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every step with --quick (a few minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="parallel training / evaluation processes (default 2)")
    parser.add_argument("--results", default=str(HERE / "results"), help="results folder (default experiments/results)")
    parser.add_argument("--report", default=str(HERE / "REPORT.md"), help="report file (default experiments/REPORT.md)")
    parser.add_argument("--only", help=f"comma-separated subset of {list(STEPS)}")
    parser.add_argument("--report-only", action="store_true", help="only reassemble the report from the results")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    names = [n.strip() for n in args.only.split(",")] if args.only else list(STEPS)
    if any(n not in STEPS for n in names):
        parser.error(f"--only: unknown step in {names}; known: {list(STEPS)}")
    import torch

    from vcm_plugin.analysis.report import machine_description

    torch.set_num_threads(1)  # as every step's processes (the description names the thread count)
    results, report = Path(args.results).resolve(), Path(args.report).resolve()
    results.mkdir(parents=True, exist_ok=True)
    state_file = results / "run_all.json"
    state = _read_json(state_file) or {}
    steps: dict[str, dict[str, Any]] = state.get("steps", {})
    info = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": f"{machine_description()}; {os.cpu_count()} cores; steps use {args.jobs} process(es) of 1 "
                       "torch thread", "commit": git_commit(),
            "load_start": [round(v, 2) for v in os.getloadavg()], "seed": args.seed, "quick": args.quick,
            "command": " ".join(["python experiments/run_all.py", *(argv if argv is not None else sys.argv[1:])])}
    if args.report_only:
        info = {**info, **state.get("info", {})}
    else:
        start = time.perf_counter()
        for name in names:
            steps[name] = run_step(name, args, results,
                                   {k: info[k] for k in ("date", "commit", "machine")})
        info["total_wall_s"] = round(time.perf_counter() - start, 1)
        info["load_end"] = [round(v, 2) for v in os.getloadavg()]
        if set(names) != set(STEPS):  # a partial rerun: the total is the sum of the steps' own times
            info["total_wall_s"] = round(sum(s["wall_s"] for s in steps.values()), 1)
        state_file.write_text(json.dumps({"info": info, "steps": steps}, indent=2) + "\n")
    report.write_text(assemble(args, results, report, {n: steps[n] for n in STEPS if n in steps}, info))
    print(f"wrote {report}" + (f" ({info['total_wall_s']:.0f} s)" if info.get("total_wall_s") else ""))
    return 0 if all(s["rc"] == 0 for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
