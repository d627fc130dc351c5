"""``vcm compare``: rate-PSNR points of codecs on images, and BD-rate against an anchor.

The points come from the evaluation harness (:func:`vcm_plugin.pipeline.compare.measure`):
with ``--output DIR`` its results store is kept there and a rerun reuses every unit.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from typing import Any

from vcm_plugin import sample
from vcm_plugin.cli.common import ENVELOPE_FLAG, CLIError, check_jobs, parse_params, parse_quality, write_file
from vcm_plugin.errors import VcmError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm compare``."""
    p = sub.add_parser("compare", help="rate-PSNR points of codecs on images, and BD-rate against an anchor")
    p.add_argument("images", nargs="*")
    p.add_argument("--sample", choices=["kodak"], help="use the embedded Kodak sample images")
    p.add_argument("--codec", action="append", required=True, metavar="NAME:Q1,Q2,...")
    p.add_argument("--codec-param", action="append", metavar="CODEC.KEY=VALUE")
    p.add_argument("--anchor", help="codec name to compute BD-rate against")
    p.add_argument("--non-monotonic", default="error", choices=["error", "envelope"],
                   help="BD-rate of curves whose PSNR is not increasing in rate: error (n/a) or envelope")
    p.add_argument("--jobs", "-j", type=int, default=None, help="worker processes, at least 1 (default: all cores)")
    p.add_argument("--csv", help="also write the points to this CSV file")
    p.add_argument("--output", "-o", help="keep the run (results store, reports) in this folder; a rerun into it "
                                          "recomputes nothing (default: a temporary folder)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Measure the codecs' points, print them (and BD-rates against ``--anchor``)."""
    from vcm_plugin.evaluation.bd import bd_rate_report
    from vcm_plugin.pipeline import compare

    images = [str(p) for p in sample.kodak_images()] if args.sample else list(args.images)
    if not images:
        raise CLIError("no images: give image files or --sample kodak")
    for path in images:
        if not os.path.isfile(path):
            raise CLIError(f"image {path}: no such file")
    params: dict[str, dict[str, Any]] = {}
    for name, value in parse_params(args.codec_param, "--codec-param").items():
        codec, dot, key = name.partition(".")
        if not dot:
            raise CLIError(f"--codec-param {name}: expected CODEC.KEY=VALUE")
        params.setdefault(codec, {})[key] = value
    specs = []
    for text in args.codec:
        name, sep, qualities = text.partition(":")
        if not sep or not qualities:
            raise CLIError(f"--codec {text!r}: expected NAME:Q1,Q2,... (e.g. vvc:42,37,32,27)")
        specs.append(compare.CodecSpec(name, tuple(map(parse_quality, qualities.split(","))), params.get(name, {})))
    check_jobs(args.jobs)
    anchor = [s for s in specs if s.name == args.anchor or s.label == args.anchor] if args.anchor else []
    if args.anchor and not anchor:  # checked before any coding
        raise CLIError(f"--anchor {args.anchor!r} is not one of the --codec names "
                       f"({', '.join(s.label for s in specs)})")
    points = compare.measure(specs, images, output=args.output, jobs=args.jobs, progress=not args.quiet)

    print(f"\n{len(images)} image(s); bpp = total bits / total original pixels; PSNR = mean over images (dB)")
    print(f"{'codec':<14}{'quality':>8}{'bpp':>10}{'PSNR-Y':>9}{'PSNR-RGB':>10}{'enc ms/MP':>11}{'dec ms/MP':>11}")
    rows = [compare.point_row(p) for p in points]
    for r in rows:
        print(f"{r['codec']:<14}{r['quality']!s:>8}{r['bpp']:>10.4f}{r['psnr_y']:>9.2f}{r['psnr_rgb']:>10.2f}"
              f"{r['encode_ms_per_mp']:>11.0f}{r['decode_ms_per_mp']:>11.0f}")
    if args.csv:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_file(args.csv, text.getvalue().encode())
    if anchor:
        a_pts = [p for p in points if p.codec == anchor[0].label]
        print(f"\nBD-rate (PSNR-Y, pchip) against {anchor[0].label}; negative = fewer bits than the anchor")
        for spec in specs:
            if spec is anchor[0]:
                continue
            t_pts = [p for p in points if p.codec == spec.label]
            try:
                report = bd_rate_report([p.bpp for p in a_pts], [p.primary for p in a_pts],
                                        [p.bpp for p in t_pts], [p.primary for p in t_pts],
                                        anchor_name=anchor[0].label, test_name=spec.label,
                                        non_monotonic=args.non_monotonic, envelope_option=ENVELOPE_FLAG)
                print(f"  {spec.label:<14}{report.value:+8.2f} %")
            except VcmError as exc:
                print(f"  {spec.label:<14} n/a: {exc}")
    return 0
