"""``vcm check-codec NAME [key=value ...]``: the conformance kit for (plug-in) codecs, a pass/fail table."""

from __future__ import annotations

import argparse
import textwrap

from vcm_plugin.cli.common import CLIError, parse_params, parse_quality

#: Width of the table; a long reason wraps under its row.
TABLE_WIDTH = 120


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm check-codec``."""
    p = sub.add_parser("check-codec", help="check that a codec keeps the codec contract (round trip, determinism, "
                                           "fresh-process decode, rate, corrupt streams, odd sizes, stdout)")
    p.add_argument("codec", help="registered codec name (`vcm codecs` lists them)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="codec parameter, e.g. preset=faster")
    p.add_argument("--quality", help="quality of the round trip and the other single-quality checks "
                                     "(default: the middle of the codec's range)")
    p.add_argument("--qualities", type=int, default=4, help="qualities the rate check spreads over the range")
    p.add_argument("--images", type=int, default=None, help="sample images the round trip codes (default all 8)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds each check may take (default 300)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Print the table; 0 when every check passes, 1 otherwise."""
    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.conformance.codec import check_codec

    params = parse_params(args.overrides, where="codec parameter")
    if args.images is not None and args.images < 1:
        raise CLIError(f"--images {args.images}: at least one sample image is needed")
    codec = get_codec(args.codec, **params)
    quality = None if args.quality is None else parse_quality(args.quality)
    report = check_codec(codec, quality=quality, qualities=args.qualities, max_images=args.images,
                         timeout=args.timeout)
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    print(f"codec {report.codec}{' ' + shown if shown else ''}, {codec.quality_range.name} {report.quality}")
    width = max(len(c.check) for c in report.checks)
    indent = " " * (width + 10)
    print(f"{'check'.ljust(width)}  {'result':<6}  detail")
    for row in report.checks:
        lines = textwrap.wrap(row.detail, TABLE_WIDTH - len(indent), break_on_hyphens=False) or [""]
        print(f"{row.check.ljust(width)}  {row.status.upper():<6}  {lines[0]}".rstrip())
        for line in lines[1:]:
            print(f"{indent}{line}")
    if report.encode_ms_per_mp is not None:
        print(f"timing: encode {report.encode_ms_per_mp:.1f} ms/MP, decode {report.decode_ms_per_mp:.1f} ms/MP "
              f"({report.images} sample image(s), {report.megapixels:.2f} MP)")
    failed = report.failed
    not_applicable = [c.check for c in report.checks if c.status == "n/a"]
    print(f"{len(report.checks) - len(failed) - len(not_applicable)} of {len(report.checks)} checks passed"
          + (f", {len(not_applicable)} n/a ({', '.join(not_applicable)})" if not_applicable else "")
          + (f"; failed: {', '.join(c.check for c in failed)}" if failed else ""))
    return 0 if report.passed else 1
