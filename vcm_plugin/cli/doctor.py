"""``vcm doctor``: what can run here and why not, one line per item (always exits 0)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm doctor``."""
    p = sub.add_parser("doctor", help="what can run here and why not: ffmpeg and its encoders, codecs, VTM, "
                                      "optional libraries, weights, threads, free disk")
    p.add_argument("--output", default="outputs", help="output folder whose free disk is reported (default outputs)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Print one ``ok`` / ``no`` line per item."""
    from vcm_plugin.conformance.environment import environment_report

    for item in environment_report(args.output):
        print(f"{'ok' if item.ok else 'no'}  {item.item}: {item.detail}")
    return 0
