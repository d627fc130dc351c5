"""``vcm bd-rate``: Bjontegaard delta between two rate-metric curves (CSV: rate,metric)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from vcm_plugin.cli.common import ENVELOPE_FLAG, CLIError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm bd-rate``."""
    from vcm_plugin.evaluation.bd import DEFAULT_MIN_OVERLAP

    p = sub.add_parser(
        "bd-rate", help="Bjontegaard delta between two rate-metric curves (CSV: rate,metric)",
        description="BD-rate (percent, negative = the test curve saves bits) and BD-metric (metric units, positive "
                    "= the test curve is better) of TEST against ANCHOR. Each is reported on its own: BD-rate needs "
                    "the curves to overlap in metric, BD-metric in log10(rate) (by at least --min-overlap of the "
                    "narrower range); the one that cannot be computed is printed as 'n/a' with the reason. Exit "
                    "status 0 when at least one is computed, 2 when neither is or an input is invalid.")
    p.add_argument("anchor")
    p.add_argument("test")
    p.add_argument("--method", default="pchip", choices=["pchip", "akima", "cubic"])
    p.add_argument("--non-monotonic", default="error", choices=["error", "envelope"],
                   help="what to do with a metric that is not increasing in rate (envelope: drop dominated points)")
    p.add_argument("--min-overlap", type=float, default=DEFAULT_MIN_OVERLAP, metavar="FRACTION",
                   help="least overlap of the curves on the integration axis, as a fraction of the narrower range "
                        "(default %(default)s)")
    p.set_defaults(func=cmd)


def _format_points(points: Sequence[Any]) -> str:
    return "; ".join(str(p) for p in points) if points else "none"


def cmd(args: argparse.Namespace) -> int:
    """Print BD-rate and BD-metric of ``args.test`` against ``args.anchor``."""
    from vcm_plugin.evaluation.bd import BDOverlapError, bd_metric_report, bd_rate_report, load_curve_csv

    if not 0.0 <= args.min_overlap <= 1.0:
        raise CLIError(f"--min-overlap {args.min_overlap:g}: must be within 0..1 (a fraction of the narrower curve's "
                       "range)")
    anchor = load_curve_csv(args.anchor)
    test = load_curve_csv(args.test)
    kwargs: dict[str, Any] = dict(method=args.method, non_monotonic=args.non_monotonic, min_overlap=args.min_overlap,
                                  anchor_name=args.anchor, test_name=args.test, envelope_option=ENVELOPE_FLAG)
    # each delta is computed or marked n/a on its own: JPEG-vs-VVC PSNR curves overlap fully in
    # metric (BD-rate fine) but often little in rate (BD-metric refused), or the reverse
    results, reasons = {}, {}
    for kind, func in (("rate", bd_rate_report), ("metric", bd_metric_report)):
        try:
            results[kind] = func(*anchor, *test, **kwargs)
        except BDOverlapError as exc:
            reasons[kind] = str(exc)
    if not results:
        raise CLIError(f"neither BD-rate nor BD-metric can be computed: {reasons['rate']}; {reasons['metric']}; "
                       "--min-overlap lowers the threshold")
    shown = {"rate": lambda v: f"{v:+.3f} %  (negative = {args.test} saves bits)",
             "metric": lambda v: f"{v:+.5f}  (positive = {args.test} is better)"}
    for kind, show in shown.items():
        value = show(results[kind].value) if kind in results else f"n/a: {reasons[kind]}"
        print(f"BD-{kind} ({args.method}): {value}")
    first = next(iter(results.values()))
    if first.envelope_used:
        print(f"monotone envelope dropped: anchor {args.anchor}: {_format_points(first.anchor_dropped)}; "
              f"test {args.test}: {_format_points(first.test_dropped)}")
    return 0
