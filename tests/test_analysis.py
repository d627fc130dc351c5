"""Task appropriateness ρ (vcm_plugin.analysis), `vcm appropriateness`, and the experiments toy_fig2 / claim4_rho."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from vcm_plugin.analysis import rho as rho_mod
from vcm_plugin.analysis.appropriateness import limit_threads, parse_ks
from vcm_plugin.analysis.report import CSV_COLUMNS, RhoRow, read_rho_csv
from vcm_plugin.analysis.rho import (
    AnalysisError,
    UnknownEstimatorError,
    bootstrap_indices,
    bootstrap_rho,
    check_inputs,
    entropy_bits,
    get_estimator,
    pca_reduce,
    register_estimator,
)
from vcm_plugin.cli import main
from vcm_plugin.errors import VcmError

torch.set_num_threads(1)
limit_threads(1)
ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def clusters(n_per: int, n_classes: int, sep: float, dims: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters (unit variance) with centres ``sep`` apart along the axes; labels = cluster."""
    rng = np.random.default_rng(seed)
    centres = sep * np.eye(max(dims, n_classes))[:n_classes, :dims]
    x = np.concatenate([rng.normal(size=(n_per, dims)) + c for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(n_classes), n_per)


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses / pickling look modules up by name
    spec.loader.exec_module(module)
    return module


# -- the estimator ------------------------------------------------------------------------------
def test_rho_is_one_for_separable_clusters_and_near_zero_for_independent_labels() -> None:
    est = get_estimator("kmeans-mi")
    x, y = clusters(50, 4, sep=20.0)
    assert est(x, y, 4) == pytest.approx(1.0, abs=1e-9)
    x2, y2 = clusters(50, 2, sep=20.0)
    assert est(x2, y2, 2) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(1)
    x_rand, y_rand = rng.normal(size=(4000, 5)), rng.integers(0, 2, 4000)
    assert est(x_rand, y_rand, 2) < 0.01
    assert est(x, rng.permutation(y), 4) < 0.1  # same clusters, labels shuffled
    assert entropy_bits(np.array([0, 1, 2, 3])) == pytest.approx(2.0)


def test_bootstrap_ci_contains_point_estimate_and_is_reproducible() -> None:
    x, y = clusters(200, 3, sep=2.5)
    res = bootstrap_rho(x, y, 3, n_boot=30, seed=3)
    assert 0.2 < res.rho < 0.95, res
    assert 0 <= res.ci_low <= res.rho <= res.ci_high <= 1
    assert res.replicates.shape == (30,) and np.isfinite(res.replicates).all()
    again = bootstrap_rho(x, y, 3, n_boot=30, seed=3)
    assert (again.rho, again.ci_low, again.ci_high) == (res.rho, res.ci_low, res.ci_high)
    basic = bootstrap_rho(x, y, 3, n_boot=30, seed=3, method="basic")  # mirrored around the point estimate
    assert basic.ci_low == pytest.approx(max(0.0, 2 * res.rho - res.ci_high))
    assert basic.ci_high == pytest.approx(min(1.0, 2 * res.rho - res.ci_low))
    none = bootstrap_rho(x, y, 3, n_boot=0)
    assert none.rho == res.rho or math.isfinite(none.rho)
    assert math.isnan(none.ci_low) and math.isnan(none.ci_high)
    assert (bootstrap_indices(10, 4, 7) == bootstrap_indices(10, 4, 7)).all()
    with pytest.raises(AnalysisError, match="ci method 'bca'"):
        bootstrap_rho(x, y, 3, n_boot=2, method="bca")


def test_estimator_registry_is_pluggable_and_unknown_names_error(monkeypatch) -> None:
    monkeypatch.setattr(rho_mod, "_ESTIMATORS", dict(rho_mod._ESTIMATORS))

    class Half:
        name = "test-half"

        def __call__(self, features, labels, k, seed=0) -> float:
            return 0.5

    register_estimator(Half())
    assert "test-half" in rho_mod.estimator_names() and "kmeans-mi" in rho_mod.estimator_names()
    x, y = clusters(20, 2, sep=5.0)
    res = bootstrap_rho(x, y, 2, get_estimator("test-half"), n_boot=3)
    assert (res.rho, res.ci_low, res.ci_high) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="already registered"):
        register_estimator(Half())
    register_estimator(Half(), replace=True)
    with pytest.raises(UnknownEstimatorError, match=r"unknown ρ estimator 'nope'; known: kmeans-mi, test-half") as e:
        get_estimator("nope")
    assert isinstance(e.value, VcmError) and "'nope'" in str(e.value) and not str(e.value).startswith('"')


def test_bad_inputs_to_the_estimator_name_the_input() -> None:
    x, y = clusters(5, 2, sep=5.0)
    with pytest.raises(AnalysisError, match=r"k = 1: the quantiser needs an integer k >= 2"):
        check_inputs(x, y, 1)
    with pytest.raises(AnalysisError, match=r"k = 10 must be smaller than the number of samples \(10\)"):
        check_inputs(x, y, 10)
    with pytest.raises(AnalysisError, match="fewer than 2 classes"):
        check_inputs(x, np.zeros(10, int), 2)
    with pytest.raises(AnalysisError, match="NaN"):
        check_inputs(np.where(np.arange(30).reshape(10, 3) == 4, np.nan, x), y, 2)
    with pytest.raises(AnalysisError, match=r"labels: expected shape \(10,\)"):
        check_inputs(x, y[:9], 2)
    with pytest.raises(AnalysisError, match="--k '2,1': k = 1 is below 2"):
        parse_ks("2,1")
    assert parse_ks("2, 16,2") == [2, 16]
    assert pca_reduce(x, 64).shape == (10, 3)  # clamped: unchanged
    assert pca_reduce(np.random.default_rng(0).normal(size=(10, 8)), 4).shape == (10, 4)
    assert pca_reduce(np.random.default_rng(0).normal(size=(5, 8)), 64).shape == (5, 5)  # clamped to n


# -- vcm appropriateness ----------------------------------------------------------------------
def test_cli_on_cifar10_writes_rho_csv_and_figure(shared: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "app"
    args = ["appropriateness", "--model", "cifar10-vgg", "--layers", "input,block3,fc", "--dataset", "cifar10",
            "--root", str(shared / "data" / "cifar10"), "--max-images", "60", "--k", "2,4", "--bootstrap", "2",
            "--tsne-samples", "40", "--output", str(out), "--threads", "1"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "block3" in table and "95% CI" in table
    header = (out / "rho.csv").read_text().splitlines()[0].split(",")
    assert header == CSV_COLUMNS and header[:9] == ["layer", "depth", "k", "rho", "ci_low", "ci_high", "n_samples",
                                                    "dims", "seed"]
    rows = read_rho_csv(out / "rho.csv")
    assert [(r.layer, r.depth, r.k) for r in rows] == [("input", 0, 2), ("input", 0, 4), ("block3", 3, 2),
                                                       ("block3", 3, 4), ("fc", 7, 2), ("fc", 7, 4)]
    for r in rows:
        assert isinstance(r, RhoRow) and 0 <= r.rho <= 1 and 0 <= r.ci_low <= r.ci_high <= 1
        assert r.n_samples == 60 and r.seed == 0 and r.bootstrap == 2 and r.estimator == "kmeans-mi"
        assert 0 <= r.rho_shuffled <= 1
    assert {r.layer: (r.raw_dims, r.dims) for r in rows} == {"input": (3072, 60), "block3": (1792, 60),
                                                              "fc": (10, 10)}
    png = (out / "rho.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000
    from PIL import Image

    with Image.open(out / "rho.png") as im:
        assert im.width > 800 and im.height > 600
    info = json.loads((out / "rho.json").read_text())
    assert info["config"]["n_samples"] == 60 and info["config"]["class_counts"]["truck"] == 6
    assert "not the paper's" in info["definition"] and info["wall_s"] > 0


def test_cli_bad_inputs_name_the_input(shared: Path, tmp_path: Path, capsys) -> None:
    base = ["appropriateness", "--model", "cifar10-vgg", "--dataset", "cifar10", "--root",
            str(shared / "data" / "cifar10"), "--max-images", "20", "--output", str(tmp_path / "o"), "--threads", "1"]
    assert main([*base, "--layers", "input,block9"]) == 2
    err = capsys.readouterr().err
    assert "block9" in err and "valid cut points: input, block1, block2, block3, block4, block5, pool, fc" in err
    assert main([*base, "--layers", "fc", "--k", "2,20"]) == 2
    err = capsys.readouterr().err
    assert "k = [20]" in err and "number of images (20)" in err
    assert main([*base, "--layers", "fc", "--k", "1"]) == 2
    assert "--k '1': k = 1 is below 2" in capsys.readouterr().err
    assert main([*base, "--layers", "fc", "--estimator", "nope"]) == 2
    assert "unknown ρ estimator 'nope'" in capsys.readouterr().err
    assert main([*base[:2], "no-such-model", *base[3:]]) == 2
    assert "unknown task model 'no-such-model'" in capsys.readouterr().err
    assert main([*base[:4], "no-such-data", *base[5:]]) == 2
    assert "unknown dataset 'no-such-data'" in capsys.readouterr().err
    assert main([*base[:-4], "--max-images", "1", "--layers", "fc", "--k", "2", "--output", str(tmp_path)]) == 2
    assert "only 1 class present" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written on a bad input


# -- the experiments ----------------------------------------------------------------------------
def test_toy_fig2_quick_writes_figure_json_and_report(tmp_path: Path) -> None:
    toy = load_script("toy_fig2")
    assert toy.main(["--output", str(tmp_path), "--quick", "--seed", "0"]) == 0
    info = json.loads((tmp_path / "toy_fig2.json").read_text())
    assert {"rho_input", "rho_hidden", "seed", "wall_s", "machine", "config"} <= set(info)
    ri, rh = info["rho_input"], info["rho_hidden"]
    for r in (ri, rh):
        assert 0 <= r["ci_low"] <= r["rho"] <= r["ci_high"] <= 1
    # the point of Fig. 2: the 1-bit MSE split mixes the classes at the input, not at the hidden layer
    assert ri["rho"] < 0.1 and rh["rho"] > 0.9 and info["rho_hidden_greater"] is True
    assert info["config"]["quick"] is True and info["seed"] == 0 and info["train_accuracy"] > 0.95
    report = (tmp_path / "REPORT_section.md").read_text()
    assert report.startswith("## ") and "ρ(hidden) > ρ(input): yes" in report and f"{rh['rho']:.3f}" in report
    png = (tmp_path / "toy_fig2.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000


def test_claim4_trend_rule_can_say_no() -> None:
    claim4 = load_script("claim4_rho")

    def rows(values: list[float]) -> list[RhoRow]:
        return [RhoRow(f"l{d}", d, 2, v, v - 0.01, v + 0.01, 100, 4, 0) for d, v in enumerate(values)]

    rising = claim4.depth_trend(rows([0.1, 0.2, 0.3, 0.5, 0.6]), {(f"l{d}", 2): np.empty(0) for d in range(5)}, 2)
    assert rising["rises"] and rising["spearman"] == pytest.approx(1.0) and not rising["drops"]
    falling = claim4.depth_trend(rows([0.6, 0.5, 0.4, 0.45, 0.1]), {(f"l{d}", 2): np.empty(0) for d in range(5)}, 2)
    assert not falling["rises"] and falling["spearman"] < 0 and len(falling["drops"]) == 3
    assert "beyond the CIs" in falling["drops"][0]


@pytest.mark.slow
def test_claim4_quick_writes_csv_figure_json_and_report(shared: Path, tmp_path: Path) -> None:
    claim4 = load_script("claim4_rho")
    assert claim4.main(["--output", str(tmp_path), "--quick", "--quiet",
                        "--cifar-root", str(shared / "data" / "cifar10")]) == 0
    rows = read_rho_csv(tmp_path / "cifar10-vgg" / "rho.csv")
    assert [r.layer for r in rows if r.k == 2] == claim4.CIFAR_LAYERS and {r.k for r in rows} == {2, 8}
    assert all(r.n_samples == 200 for r in rows)
    assert (tmp_path / "cifar10-vgg" / "rho.png").read_bytes().startswith(PNG_MAGIC)
    info = json.loads((tmp_path / "claim4_rho.json").read_text())
    section = info["sections"]["cifar10-vgg"]
    assert info["quick"] is True and info["seed"] == 0 and info["wall_s"] > 0 and info["machine"]
    assert [t["k"] for t in section["trends"]] == [2, 8] and section["verdict"] in ("yes", "no", "for some k only")
    report = (tmp_path / "REPORT_section.md").read_text()
    assert "Does ρ rise with depth?" in report and "VGG16" in report and "QUICK run" in report
    assert "| fc | 7 |" in report
