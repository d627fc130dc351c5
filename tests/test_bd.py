"""Bjontegaard deltas: agreement with the bjontegaard package, sanity values, validation, envelope, CSV."""

from __future__ import annotations

import json
import re
from pathlib import Path

import bjontegaard
import numpy as np
import pytest

import vcm_plugin
from vcm_plugin.errors import BDRateError, VcmError
from vcm_plugin.evaluation.bd import (
    DEFAULT_MIN_OVERLAP,
    METHODS,
    CurvePoint,
    bd_metric,
    bd_metric_report,
    bd_rate,
    bd_rate_report,
    load_curve_csv,
)

# bjontegaard README / example_usage.py test case 1 (rate in kbps, PSNR in dB)
A_RATE = [9487.76, 4593.60, 2486.44, 1358.24]
A_PSNR = [40.037, 38.615, 36.845, 34.851]
T_RATE = [9787.80, 4469.00, 2451.52, 1356.24]
T_PSNR = [40.121, 38.651, 36.970, 34.987]


@pytest.fixture(scope="module")
def vtm_vs_factorized(shared: Path) -> tuple[np.ndarray, np.ndarray, list[float], list[float]]:
    """Published VTM detection anchor (bpp, mAP) and the bmshj2018_factorized curve of the same pipeline."""
    ref = shared / "reference" / "compressai-vision"
    vtm = np.loadtxt(ref / "vtm_scale_100" / "vtm-scale-100.csv", comments="#")
    assert vtm.shape == (6, 2)
    runs = [json.loads(p.read_text()) for p in sorted((ref / "bmshj2018_factorized").glob("*.json"))]
    assert len(runs) == 8
    return vtm[:, 0], vtm[:, 1], [r["bpp"][0] for r in runs], [r["map"][0] for r in runs]


def test_public_api_is_this_module() -> None:
    assert vcm_plugin.bd_rate is bd_rate
    assert vcm_plugin.bd_metric is bd_metric
    assert issubclass(BDRateError, VcmError)


@pytest.mark.parametrize("method", METHODS)
def test_matches_bjontegaard_on_readme_data(method: str) -> None:
    expected_rate = bjontegaard.bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR, method=method)
    expected_psnr = bjontegaard.bd_psnr(A_RATE, A_PSNR, T_RATE, T_PSNR, method=method)
    assert bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR, method) == pytest.approx(expected_rate, rel=1e-12, abs=1e-12)
    assert bd_metric(A_RATE, A_PSNR, T_RATE, T_PSNR, method) == pytest.approx(expected_psnr, rel=1e-12, abs=1e-12)
    # the test curve is above the anchor: it saves bits and gains PSNR
    assert -5.0 < bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR, method) < -4.0
    assert 0.11 < bd_metric(A_RATE, A_PSNR, T_RATE, T_PSNR, method) < 0.13


@pytest.mark.parametrize("method", METHODS)
def test_matches_bjontegaard_on_published_vtm_anchor(vtm_vs_factorized, method: str) -> None:
    vr, vm, fr, fm = vtm_vs_factorized
    expected_rate = bjontegaard.bd_rate(vr, vm, fr, fm, method=method, require_matching_points=False, min_overlap=0)
    expected_map = bjontegaard.bd_psnr(vr, vm, fr, fm, method=method, require_matching_points=False, min_overlap=0)
    report = bd_rate_report(vr, vm, fr, fm, method, anchor_name="vtm", test_name="bmshj2018_factorized")
    assert report.value == pytest.approx(expected_rate, rel=1e-12)
    assert bd_metric(vr, vm, fr, fm, method) == pytest.approx(expected_map, rel=1e-12)
    # the factorized learned codec needs more bits than VTM for the same mAP
    assert report.value > 25.0
    assert len(report.anchor_points_used) == 6 and len(report.test_points_used) == 8
    assert not report.envelope_used and report.anchor_dropped == () and report.test_dropped == ()
    # mAP ranges: vtm 0.5755..0.7867, factorized 0.6896..0.7918 -> 0.0971 / 0.1022
    assert report.overlap == pytest.approx((0.7867481045530762 - 0.6895677111211186)
                                           / (0.7918180195033772 - 0.6895677111211186))


def test_published_vtm_anchor_values_pinned(vtm_vs_factorized) -> None:
    vr, vm, fr, fm = vtm_vs_factorized
    assert bd_rate(vr, vm, fr, fm, "pchip") == pytest.approx(29.708030003, abs=1e-6)
    assert bd_rate(vr, vm, fr, fm, "akima") == pytest.approx(29.474931485, abs=1e-6)
    assert bd_rate(vr, vm, fr, fm, "cubic") == pytest.approx(38.499676217, abs=1e-6)
    assert bd_metric(vr, vm, fr, fm, "pchip") == pytest.approx(-0.0102186726, abs=1e-8)


def test_cubic_is_the_vceg_m33_polynomial_fit() -> None:
    """Independent VCEG-M33 computation: degree-3 polyfit of log10(rate) over metric, integrated."""
    la, lt = np.log10(A_RATE), np.log10(T_RATE)
    pa, pt = np.polyint(np.polyfit(A_PSNR, la, 3)), np.polyint(np.polyfit(T_PSNR, lt, 3))
    lo, hi = max(min(A_PSNR), min(T_PSNR)), min(max(A_PSNR), max(T_PSNR))
    diff = (np.polyval(pt, hi) - np.polyval(pt, lo) - np.polyval(pa, hi) + np.polyval(pa, lo)) / (hi - lo)
    assert bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR, "cubic") == pytest.approx((10**diff - 1) * 100, rel=1e-9)
    assert bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR, "cubic") != bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR, "pchip")


def test_input_order_does_not_matter() -> None:
    order_a, order_t = [2, 0, 3, 1], [1, 3, 0, 2]
    shuffled = ([A_RATE[i] for i in order_a], [A_PSNR[i] for i in order_a],
                [T_RATE[i] for i in order_t], [T_PSNR[i] for i in order_t])
    for method in METHODS:
        assert bd_rate(*shuffled, method) == pytest.approx(bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR, method), rel=1e-12)
        assert bd_metric(*shuffled, method) == pytest.approx(bd_metric(A_RATE, A_PSNR, T_RATE, T_PSNR, method))
    report = bd_rate_report(*shuffled)
    assert [p.rate for p in report.anchor_points_used] == sorted(A_RATE)
    assert report.anchor_points_used[0] == CurvePoint(2, 1358.24, 34.851)  # index in the caller's order


@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_give_zero(method: str) -> None:
    assert bd_rate(A_RATE, A_PSNR, A_RATE, A_PSNR, method) == pytest.approx(0.0, abs=1e-10)
    assert bd_metric(A_RATE, A_PSNR, A_RATE, A_PSNR, method) == pytest.approx(0.0, abs=1e-10)


def test_half_and_double_rate_and_metric_shift() -> None:
    half = [r / 2 for r in A_RATE]
    assert bd_rate(A_RATE, A_PSNR, half, A_PSNR, "pchip") == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(half, A_PSNR, A_RATE, A_PSNR, "pchip") == pytest.approx(100.0, abs=1e-9)
    # a test curve 0.5 dB above the anchor at every rate
    assert bd_metric(A_RATE, A_PSNR, A_RATE, [m + 0.5 for m in A_PSNR], "pchip") == pytest.approx(0.5, abs=1e-12)
    # half the rate at equal metric = better quality at equal rate
    assert bd_metric(A_RATE, A_PSNR, half, A_PSNR, "pchip") > 0


def test_swapping_anchor_and_test_flips_the_sign() -> None:
    forward = bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR)
    backward = bd_rate(T_RATE, T_PSNR, A_RATE, A_PSNR)
    assert (1 + forward / 100) * (1 + backward / 100) == pytest.approx(1.0, rel=1e-3)
    assert bd_metric(T_RATE, T_PSNR, A_RATE, A_PSNR) == pytest.approx(-bd_metric(A_RATE, A_PSNR, T_RATE, T_PSNR))


# ---------------------------------------------------------------- validation


def _raises(match: str, *args, func=bd_rate, **kwargs) -> str:
    with pytest.raises(BDRateError, match=match) as info:
        func(*args, **kwargs)
    return str(info.value)


def test_too_few_points_names_the_curve() -> None:
    msg = _raises("at least 4", A_RATE, A_PSNR, T_RATE[:3], T_PSNR[:3], test_name="jpeg")
    assert "'jpeg'" in msg and "3 points" in msg


def test_length_mismatch() -> None:
    msg = _raises("5 rate values but 4 metric", A_RATE + [20000.0], A_PSNR, T_RATE, T_PSNR, anchor_name="vvc")
    assert "'vvc'" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -3.0])
def test_bad_rate_names_point_and_value(bad: float) -> None:
    rates = list(T_RATE)
    rates[2] = bad
    msg = _raises("rate of point 2", A_RATE, A_PSNR, rates, T_PSNR, test_name="mycodec")
    assert "'mycodec'" in msg and repr(bad) in msg


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_bad_metric_names_point_and_value(bad: float) -> None:
    metrics = list(A_PSNR)
    metrics[1] = bad
    msg = _raises("metric of point 1", A_RATE, metrics, T_RATE, T_PSNR, func=bd_metric, anchor_name="vtm")
    assert "'vtm'" in msg and repr(bad) in msg


def test_non_numeric_and_2d_inputs() -> None:
    _raises("'anchor'.*not numbers", ["a", "b", "c", "d"], A_PSNR, T_RATE, T_PSNR)
    _raises("'test'.*1-D", A_RATE, A_PSNR, [T_RATE], [T_PSNR])


def test_duplicate_rates_name_both_points() -> None:
    rates = [1.0, 2.0, 4.0, 2.0, 8.0]
    msg = _raises("same rate", rates, [30, 32, 34, 33, 36], A_RATE, A_PSNR, anchor_name="dup")
    assert "'dup'" in msg and re.search(r"points 1 and 3|points 3 and 1", msg)


def test_non_monotonic_reports_which_points() -> None:
    rates = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    metric = [0.50, 0.60, 0.58, 0.70, 0.70, 0.75]  # point 2 dips below point 1, point 4 ties with point 3
    msg = _raises("not strictly increasing", rates, metric, rates, [m + 0.01 for m in metric], anchor_name="yolo")
    assert "'yolo'" in msg
    assert "point 2 (rate=0.4, metric=0.58) is not above point 1 (rate=0.2, metric=0.6)" in msg
    assert "point 4 (rate=1.6, metric=0.7) is not above point 3" in msg
    assert "point 5" not in msg and "envelope" in msg


def test_insufficient_metric_overlap_names_both_curves() -> None:
    # metric ranges 30..36 and 35..41: overlap 1 / 6 of the narrower range
    rates = [1.0, 2.0, 4.0, 8.0]
    msg = _raises("overlap by 16.7%", rates, [30, 32, 34, 36], rates, [35, 37, 39, 41],
                  anchor_name="jpeg", test_name="vvc")
    assert "'jpeg'" in msg and "'vvc'" in msg and "metric" in msg and "50.0%" in msg
    # the same curves are accepted when the caller lowers the threshold
    assert bd_rate(rates, [30, 32, 34, 36], rates, [35, 37, 39, 41], min_overlap=0.1) < 0


def test_disjoint_curves_refused_even_with_zero_min_overlap() -> None:
    rates = [1.0, 2.0, 4.0, 8.0]
    _raises("overlap by 0.0%", rates, [30, 32, 34, 36], rates, [40, 42, 44, 46], min_overlap=0.0)


def test_bd_metric_checks_rate_overlap_not_metric_overlap() -> None:
    metric = [30, 32, 34, 36]
    low, high = [1.0, 2.0, 4.0, 8.0], [100.0, 200.0, 400.0, 800.0]
    assert bd_rate(low, metric, high, metric) == pytest.approx(9900.0)
    msg = _raises("log10\\(rate\\)", low, metric, high, metric, func=bd_metric, anchor_name="a1", test_name="t1")
    assert "'a1'" in msg and "'t1'" in msg


def test_default_min_overlap_is_documented() -> None:
    import vcm_plugin.evaluation.bd as bd

    assert DEFAULT_MIN_OVERLAP == 0.5
    assert "min_overlap" in bd.__doc__ and "narrower" in bd.__doc__


def test_bad_options() -> None:
    _raises("unknown BD interpolation method 'linear'", A_RATE, A_PSNR, T_RATE, T_PSNR, "linear")
    _raises("unknown non_monotonic option 'drop'", A_RATE, A_PSNR, T_RATE, T_PSNR, non_monotonic="drop")
    _raises("min_overlap", A_RATE, A_PSNR, T_RATE, T_PSNR, min_overlap=1.5)


# ---------------------------------------------------------------- monotone envelope

NOISY_RATE = [0.8, 0.1, 0.2, 0.4, 1.6, 3.2, 6.4]  # unsorted on purpose
NOISY_MAP = [0.70, 0.50, 0.60, 0.58, 0.70, 0.75, 0.74]
# sorted: 0.1:.50 0.2:.60 0.4:.58(dropped) 0.8:.70 1.6:.70(dropped, tie) 3.2:.75 6.4:.74(dropped)


def test_envelope_drops_dominated_points() -> None:
    test_map = [m + 0.02 for m in NOISY_MAP]
    report = bd_rate_report(NOISY_RATE, NOISY_MAP, NOISY_RATE, test_map, non_monotonic="envelope")
    assert report.envelope_used
    assert [p.index for p in report.anchor_dropped] == [3, 4, 6]
    assert [(p.rate, p.metric) for p in report.anchor_dropped] == [(0.4, 0.58), (1.6, 0.70), (6.4, 0.74)]
    assert [p.index for p in report.anchor_points_used] == [1, 2, 0, 5]
    assert [p.index for p in report.test_dropped] == [3, 4, 6]
    kept = [1, 2, 0, 5]
    direct = bjontegaard.bd_rate([NOISY_RATE[i] for i in kept], [NOISY_MAP[i] for i in kept],
                                 [NOISY_RATE[i] for i in kept], [test_map[i] for i in kept], method="pchip")
    assert report.value == pytest.approx(direct, rel=1e-12)
    assert report.value < 0
    metric_report = bd_metric_report(NOISY_RATE, NOISY_MAP, NOISY_RATE, test_map, non_monotonic="envelope")
    assert metric_report.value == pytest.approx(0.02, abs=1e-12)
    assert metric_report.kind == "metric" and report.kind == "rate"


def test_envelope_on_monotone_curve_changes_nothing() -> None:
    report = bd_rate_report(A_RATE, A_PSNR, T_RATE, T_PSNR, "akima", non_monotonic="envelope")
    assert report.envelope_used and report.anchor_dropped == () and report.test_dropped == ()
    assert report.value == bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR, "akima")
    assert report.method == "akima"


def test_envelope_with_too_few_points_left() -> None:
    rates = [0.1, 0.2, 0.4, 0.8, 1.6]
    metric = [0.5, 0.7, 0.6, 0.65, 0.8]  # envelope keeps 0.1, 0.2, 1.6
    msg = _raises("only 3 points remain", A_RATE, A_PSNR, rates, metric, non_monotonic="envelope", test_name="noisy")
    assert "'noisy'" in msg and "[2, 3]" in msg


# ---------------------------------------------------------------- CSV loader


def test_load_curve_csv_good(tmp_path: Path) -> None:
    path = tmp_path / "curve.csv"
    path.write_text("# VTM anchor, detection\n"
                    "qp, metric ,rate,codec\n"
                    "\n"
                    "47,40.037,9487.76,vtm\n"
                    "  # a comment in the middle\n"
                    "42,38.615,4593.60,vtm\n"
                    "37,36.845,2486.44,vtm\n"
                    "32,34.851,1358.24,vtm\n")
    rates, metrics = load_curve_csv(path)
    assert rates == A_RATE and metrics == A_PSNR
    assert bd_rate(rates, metrics, T_RATE, T_PSNR) == bd_rate(A_RATE, A_PSNR, T_RATE, T_PSNR)


@pytest.mark.parametrize(("content", "match"), [
    ("rate,psnr\n1,30\n", r"bad\.csv:1: header .* lacks column\(s\) metric"),
    ("# only\nbpp,metric\n1,30\n", r"bad\.csv:2: header .* lacks column\(s\) rate"),
    ("rate,metric\n1,30\n2,abc\n", r"bad\.csv:3: column 'metric' value 'abc' is not a number"),
    ("rate,metric\n1,30\n2\n", r"bad\.csv:3: missing value in column 'metric'"),
    ("rate,metric\nnan,30\n", r"bad\.csv:2: column 'rate' value 'nan' is not finite"),
    ("# nothing\n\n", r"bad\.csv: no header line"),
    ("rate,metric\n# no rows\n", r"bad\.csv: header found but no data rows"),
])
def test_load_curve_csv_bad(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(BDRateError, match=match):
        load_curve_csv(path)


def test_load_curve_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BDRateError, match="cannot read curve file .*absent.csv"):
        load_curve_csv(tmp_path / "absent.csv")
