"""``vcm inspect RUN``: per-image analysis of a run: matched-rate deltas, the images that drive BD-rate, a gallery."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm inspect``."""
    p = sub.add_parser("inspect", help="per-image analysis of a run: matched-rate deltas against each anchor, the "
                                       "images that drive BD-rate, a gallery of the worst cases")
    p.add_argument("run", metavar="RUN", help="a run's output folder (holds results.sqlite and config.yaml)")
    p.add_argument("--anchor", action="append", metavar="LABEL",
                   help="codec label to compare against, repeatable (default: the run config's anchors)")
    p.add_argument("--worst", type=int, default=4, help="gallery images per codec-vs-anchor comparison (default 4)")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="draw detections from this score on (default 0.3)")
    p.add_argument("--output", "-o", help="output folder (default RUN/inspect)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Write RUN/inspect: matched_rate.csv, drivers.csv, gallery/*.png, index.html."""
    from vcm_plugin.analysis.inspect import inspect_run
    from vcm_plugin.cli.common import CLIError

    if args.worst < 0:
        raise CLIError(f"--worst {args.worst}: the number of gallery images must be at least 0")
    if not 0 <= args.score_threshold <= 1:
        raise CLIError(f"--score-threshold {args.score_threshold}: a detection score threshold is in [0, 1]")
    report = inspect_run(args.run, args.anchor, args.worst, args.score_threshold, args.output)
    worst = {}
    for d in report.drivers:
        worst.setdefault(d.comparison, d)
    for c, d in worst.items():
        print(f"{c.task} {c.codec} vs {c.anchor} (scale {c.scale:g}): worst image {d.image_id}, mean {c.metric} "
              f"delta at matched rate {d.mean_delta:+.2f}")
    if report.left_out:
        print(f"left out (incomplete): {', '.join(report.left_out)}")
    print(f"wrote {', '.join(str(p) for p in report.files.values())}")
    return 0
