"""``vcm build-sample``: rebuild the embedded sample from the shared real data (maintainers only)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm build-sample``."""
    from vcm_plugin.sample.build_sample import SAMPLE_DIR, default_shared

    p = sub.add_parser("build-sample", help="rebuild the embedded sample from ../shared (maintainers only)")
    p.add_argument("--shared", type=Path, default=default_shared(), help="the shared data folder")
    p.add_argument("--out", type=Path, default=SAMPLE_DIR, help="where to write the sample")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Copy and check the sample files, then report its size."""
    from vcm_plugin.sample.build_sample import build

    build(args.shared, args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"sample written to {args.out} ({total / 1e6:.2f} MB including code)")
    return 0
