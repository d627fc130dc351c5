"""The claim (i)-(iii) experiment scripts and experiments/run_all.py: their --quick versions run end to end
and write well-formed records (RD points, BD-rate entries or an explicit n/a, report sections). Whether a
claim holds is NOT tested: quick runs are smoke tests."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
RD_COLUMNS = ["arm", "codec", "quality", "lmbda", "steps", "bpp", "top1", "images", "train_wall_s", "val_bpp",
              "val_distortion"]
CLAIMS = {"claim1_parity": "## Claim (i)", "claim2_supervised": "## Claim (ii)", "claim3_depth": "## Claim (iii)"}


def load_script(name: str):
    sys.path.insert(0, str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(shared: Path, tmp_path_factory) -> Path:
    """run_all --quick for claims (i)-(iii) (toy_fig2 / claim4_rho are tested in test_analysis.py)."""
    results = tmp_path_factory.mktemp("experiments")
    run_all = load_script("run_all")
    rc = run_all.main(["--quick", "--jobs", "1", "--results", str(results / "results"), "--report",
                       str(results / "REPORT.md"), "--only", ",".join(CLAIMS)])
    logs = {p.name: p.read_text()[-2000:] for p in (results / "results").glob("*.log")}
    assert rc == 0, logs
    return results


def _bd_ok(entry: dict) -> None:
    assert {"anchor", "test", "bd_rate_pct", "bd_top1_pts", "ci95", "overlap", "note"} <= set(entry)
    if entry["bd_rate_pct"] is None:
        assert entry["note"].startswith("n/a: ") and len(entry["note"]) > 10  # the reason is given
    else:
        assert math.isfinite(entry["bd_rate_pct"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLAIMS))
def test_quick_claim_writes_rd_points_bd_entries_configs_and_section(quick_run: Path, name: str) -> None:
    out = quick_run / "results" / name
    with open(out / "rd_points.csv") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == RD_COLUMNS
        rows = list(reader)
    assert len({r["arm"] for r in rows}) >= 2 and all(len([r for r in rows if r["arm"] == a]) >= 4
                                                      for a in {r["arm"] for r in rows})
    for r in rows:
        assert float(r["bpp"]) > 0 and 0 <= float(r["top1"]) <= 100 and int(r["images"]) == 20
    info = json.loads((out / f"{name}.json").read_text())
    assert info["quick"] is True and info["seed"] == 0 and info["verdict"]
    assert info["wall_s"]["total"] > 0 and info["machine"]["start"]["cpus"] and info["command"]
    entries = info["bd"] if isinstance(info["bd"], list) else [info["bd"]]
    for entry in entries:
        _bd_ok(entry)
    # every training run's exact YAML is in the results folder and names its output there
    import yaml

    root = EXPERIMENTS.parent  # recorded paths are relative to the repository root where they can be
    for run, rel in info["training_configs"].items():
        config = yaml.safe_load((out / rel).read_text())
        assert config["seed"] == 0 and (root / config["output"]).resolve() == (out / "train" / run).resolve()
        assert json.loads((out / "train" / run / "result.json").read_text())["wall_s"] >= 0
    with open(out / "bd_rate.csv") as fh:
        bd_rows = list(csv.DictReader(fh))
    assert len(bd_rows) == len(entries) and all(r["bd_rate_pct"] or r["note"].startswith("n/a") for r in bd_rows)
    section = (out / "REPORT_section.md").read_text()
    assert section.startswith(CLAIMS[name]) and "QUICK run" in section and "![" in section
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "rd.png").unlink()  # --replot redraws the figure from the JSON record alone
    assert load_script(name).main(["--output", str(out), "--replot", "--quiet"]) == 0
    assert (out / "rd.png").stat().st_size > 10_000


@pytest.mark.slow
def test_report_has_header_summary_and_one_section_per_step(quick_run: Path) -> None:
    text = (quick_run / "REPORT.md").read_text()
    for key in ("- Machine:", "- Date:", "- Total wall time:", "- Seeds:", "- Scale: QUICK", "## Summary"):
        assert key in text
    for heading in CLAIMS.values():
        assert heading in text
    # sections of steps that were not run are reported as such, not silently left out
    not_run = len(load_script("run_all").STEPS) - len(CLAIMS)  # toy_fig2, claim4_rho, claims_detector
    assert text.count("FAILED / not run") == not_run
    assert "Reading claim (i)" not in text  # the developers' reading of the full-scale results: not in a quick report
    # figure links are relative to the report and point at files that exist
    links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert links and all((quick_run / link).exists() for link in links)
    state = json.loads((quick_run / "results" / "run_all.json").read_text())
    assert set(state["steps"]) == set(CLAIMS) and all(s["rc"] == 0 for s in state["steps"].values())
    # every step records its own run; one invocation ran them all, so the header does not list them
    assert all(s["commit"] == state["info"]["commit"] and s["date"] == state["info"]["date"]
               for s in state["steps"].values())
    assert "different invocations" not in text


def test_recorded_training_configs_name_paths_relative_to_the_repository() -> None:
    common = load_script("_common")
    root = Path("/w/repo")
    config = {"output": "/w/repo/experiments/results/x/train/a", "data": {"train": ["/w/shared/data/cifar10/train"]},
              "init": "vcm-hyperprior-q2", "elsewhere": "/tmp/coco/val2017", "lr": 5e-4, "rel": "configs/a.yaml"}
    assert common.portable(config, root) == {
        "output": "experiments/results/x/train/a", "data": {"train": ["../shared/data/cifar10/train"]},
        "init": "vcm-hyperprior-q2", "elsewhere": "/tmp/coco/val2017", "lr": 5e-4, "rel": "configs/a.yaml"}


def test_recorded_eval_config_reruns_from_the_repository_root(tmp_path, monkeypatch) -> None:
    """vcm run reads the dataset's and weights' paths against the file's folder and the rest against the working
    directory: the record, loaded as vcm run loads it from the repository root, names the same files."""
    from vcm_plugin.config import load_config

    common = load_script("_common")
    root = tmp_path / "repo"
    data, weights = tmp_path / "shared" / "data" / "cifar10", tmp_path / "shared" / "weights"
    out = root / "experiments" / "results" / "claimx"
    record = out / "configs" / "eval.yaml"
    record.parent.mkdir(parents=True)
    checkpoint = out / "train" / "feature-q{quality}" / "model.pt"
    config = {"name": "claimx-eval", "output": str(out / "eval"),
              "dataset": {"name": "cifar10", "root": str(data), "split": "test", "max_images": 8},
              "tasks": {"classification": {"model": "cifar10-vgg"}}, "weights": {"search_path": [str(weights)]},
              "codecs": {"feature": {"codec": "feature-learned", "task_model": "cifar10-vgg", "cut": "block2",
                                     "checkpoint": str(checkpoint), "qualities": [1, 2]}},
              "anchors": [], "non_monotonic": "envelope"}
    record.write_text(common.eval_record(config, record, root))
    assert str(tmp_path) not in record.read_text()
    monkeypatch.chdir(root)
    loaded = load_config(record)
    assert Path(loaded.dataset.root) == data
    assert [Path(p) for p in loaded.weights.search_path] == [weights]
    assert (root / loaded.output).resolve() == out / "eval"
    assert (root / loaded.codecs["feature"].model_extra["checkpoint"]).resolve() == checkpoint.resolve()


def test_report_header_names_each_steps_own_run_after_a_partial_rerun() -> None:
    run_all = load_script("run_all")
    info = {"date": "2026-12-05T02:00:00+00:00", "commit": "bbbbbbb", "machine": "EPYC"}
    steps = {"toy_fig2": {"wall_s": 17.0, "rc": 0, "date": "2026-11-29T17:20:30+00:00", "commit": "aaaaaaa",
                          "machine": "Xeon"},
             "claim1_parity": {"wall_s": 1113.0, "rc": 0, **info},
             "claim2_supervised": {"wall_s": 917.0, "rc": 0}}  # recorded before steps carried their run
    lines = run_all.step_provenance(steps, info)
    assert "partial reruns" in lines[0]
    assert lines[1:] == ["  - toy_fig2: 2026-11-29T17:20:30+00:00, commit aaaaaaa, Xeon",
                         "  - claim1_parity: 2026-12-05T02:00:00+00:00, commit bbbbbbb, EPYC",
                         "  - claim2_supervised: unknown, commit unknown, unknown"]
    assert run_all.step_provenance({"claim1_parity": steps["claim1_parity"]}, info) == []


def test_committed_report_is_what_the_committed_results_assemble_into() -> None:
    """Every number of experiments/REPORT.md comes from the committed files: reassembling it from
    results/run_all.json, the steps' folders and INTERPRETATION.md gives the committed text."""
    import argparse

    run_all = load_script("run_all")
    results, report = EXPERIMENTS / "results", EXPERIMENTS / "REPORT.md"
    state = json.loads((results / "run_all.json").read_text())
    args = argparse.Namespace(quick=False, seed=state["info"]["seed"])
    steps = {n: state["steps"][n] for n in run_all.STEPS if n in state["steps"]}
    assert run_all.assemble(args, results, report, steps, state["info"]) == report.read_text()


def test_bd_entry_is_na_with_a_reason_when_curves_cannot_be_compared() -> None:
    common = load_script("_common")
    a = [{"codec": "a", "quality": q, "bpp": b, "top1": t} for q, (b, t) in enumerate(
        [(0.1, 10), (0.2, 20), (0.4, 30), (0.8, 40)], 1)]
    far = [{"codec": "b", "quality": q, "bpp": b, "top1": t} for q, (b, t) in enumerate(
        [(0.1, 60), (0.2, 70), (0.4, 75), (0.8, 80)], 1)]
    entry = common.bd_entry(a, far, "a", "b")
    assert entry["bd_rate_pct"] is None and entry["note"].startswith("n/a: ")
    assert entry["bd_top1_pts"] > 0  # the rates overlap: BD-top1 still says which is better
    same = common.bd_entry(a, [{**p, "codec": "b"} for p in a], "a", "b")
    assert same["bd_rate_pct"] == pytest.approx(0, abs=1e-6)
    assert common.ci_sign(same) == "spans 0" and "n/a" in common.fmt_bd(entry)


def test_verdict_rules_can_say_no() -> None:
    c1, c2, c3 = load_script("claim1_parity"), load_script("claim2_supervised"), load_script("claim3_depth")
    entry = {"bd_rate_pct": 45.0, "ci95": [30.0, 60.0], "bd_top1_pts": -5.0, "ci95_top1": [-7.0, -3.0]}
    assert c1.verdict(entry) == "not supported" and c2.verdict(entry) == "contradicted"
    assert c3.verdict([entry, {**entry, "ci95": [-10.0, 5.0]}]) == "contradicted"
    assert c1.verdict({**entry, "bd_rate_pct": 3.0, "ci95": [-8.0, 12.0]}) == "supported"
    assert c2.verdict({**entry, "bd_rate_pct": None}) == "contradicted (by BD-top1)"


def test_claim1_pilot_rules_overall_verdict_and_time_guard_are_the_docstrings() -> None:
    c1 = load_script("claim1_parity")
    grid = c1.PILOT["lmbdas"]  # [0.3, 1, 3, 10, 30, 100, 300, 1000]
    # one below the smallest lambda whose top-1 agreement reaches the threshold, moved down to fit 6
    assert c1.choose_grid(grid, [0.1, 0.1, 0.12, 0.2, 0.35, 0.5, 0.6, 0.6], 6, 0.3) == grid[2:]
    assert c1.choose_grid(grid, [0.1, 0.4, 0.5, 0.6, 0.65, 0.7, 0.7, 0.7], 6, 0.3) == grid[:6]
    assert c1.choose_grid(grid, [0.1] * 8, 6, 0.3) == grid[2:]  # nothing informative: the largest
    assert c1.choose_grid(grid, [None, 0.5] + [0.6] * 6, 6, 0.3) == grid[:6]
    ok = {"val": {"loss": 2.0}}
    assert c1.choose_lr({2e-4: [ok, {"val": {"loss": 4.0}}], 5e-4: [ok, {"val": {"loss": 3.0}}],
                         1e-3: [ok, {"failed": "nan", "val": {}}]}) == 5e-4
    assert c1.choose_lr({5e-4: [ok], 2e-4: [ok]}) == 2e-4  # ties: the smaller lr
    assert c1.overall({"a": "not supported at 300 steps", "b": "supported (by BD-top1) at 300 steps"}) \
        == "supported (b)"
    assert c1.overall({"a": "not supported at 300 steps", "b": "not supported at 300 steps"}).startswith("not")
    assert c1.overall({"a": "not supported", "b": "inconclusive"}) == "inconclusive"
    hp = {a: {"lmbdas": [1.0] * 6} for a in c1.ARMS}
    prev = {"train_s": 100.0, "runs": 24, "steps": 300, "eval_s": 24.0, "points": 24}  # 1/72 s per step
    arms = list(c1.ARMS)
    assert c1.fit_rung(arms, hp, 1200, prev, 50.0, 10_000) == (arms, "")
    fits, why = c1.fit_rung(arms, hp, 4800, prev, 50.0, 50 + 2 * 6 * 4800 / 72 + 12 + c1.MARGIN_S + 1)
    assert fits == arms[:2] and "time guard" in why
    assert c1.fit_rung(arms, hp, 4800, prev, 50.0, 100.0)[0] == []


def test_claim1_fixed_grids_are_the_pilot_procedures_choices_on_its_committed_rows() -> None:
    """FIXED (the CPU default) must be what choose_lr / choose_grid give on the committed pilot rows."""
    c1 = load_script("claim1_parity")
    with open(Path(c1.__file__).parent / "results" / "claim1_parity_gpu" / "pilot.csv") as fh:
        rows = list(csv.DictReader(fh))
    for arm, fixed in c1.FIXED.items():
        by_lr: dict[float, list[dict]] = {}
        for r in rows:
            if r["arm"] == arm and r["step"] == "lr":
                by_lr.setdefault(float(r["lr"]), []).append(
                    {"failed": r["failed"], "val": {}} if r["failed"] else {"val": {"loss": float(r["val_loss"])}})
        lr = c1.choose_lr(by_lr)
        grid = {float(r["lmbda"]): float(r["val_top1_agreement"]) for r in rows
                if r["arm"] == arm and r["step"] == "lambda" and not r["failed"]}
        assert sorted(grid) == c1.PILOT["lmbdas"]
        chosen = c1.choose_grid(c1.PILOT["lmbdas"], [grid[lm] for lm in c1.PILOT["lmbdas"]], c1.FULL["n_lmbdas"],
                                c1.PILOT["agreement"])
        assert (fixed["lr"], fixed["lmbdas"]) == (lr, chosen), arm


def test_claim1_continue_from_refuses_other_settings_and_finished_ladders(tmp_path: Path) -> None:
    c1 = load_script("claim1_parity")
    settings = {**c1.FULL, "quick": False, "scale": 1.0, "cut": c1.CUT, "distill": c1.DISTILL,
                "distortion": c1.DISTORTION}
    earlier = {"experiment": "claim1_parity", "quick": False,
               "config": {**settings, "budgets_run": [300, 1200],
                          "hyperparameters": {a: dict(c1.FIXED[a]) for a in ("feature", "direct-split")}}}
    path = tmp_path / "claim1_parity.json"
    path.write_text(json.dumps(earlier))
    assert c1.continued(path, settings, ["feature", "direct-split"], [300, 1200, 4800])["config"]["budgets_run"] \
        == [300, 1200]
    with pytest.raises(SystemExit, match="other settings.*max_images"):
        c1.continued(path, {**settings, "max_images": 20}, ["feature"], [4800])
    with pytest.raises(SystemExit, match="arms not in it: direct-front"):
        c1.continued(path, settings, ["feature", "direct-front"], [4800])
    with pytest.raises(SystemExit, match="nothing left"):
        c1.continued(path, settings, ["feature"], [300, 1200])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit, match="cannot be read"):
        c1.continued(tmp_path / "bad.json", settings, ["feature"], [4800])
