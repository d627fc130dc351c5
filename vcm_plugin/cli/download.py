"""``vcm download openimages``: download evaluation images (needs internet)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm download openimages --subset S --output DIR [--lists ROOT] [--jobs N]``."""
    from vcm_plugin.datasets import download

    parser = sub.add_parser("download", help="download evaluation images (needs internet)")
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    p = sources.add_parser("openimages", help="the MPEG VCM Open Images V6 validation images (5k list)",
                           description=download.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subset", required=True, choices=sorted(download.SUBSET_LISTS), help="which MPEG VCM 5k list")
    p.add_argument("--output", "-o", required=True, type=Path, help="folder for <ImageID>.jpg (created)")
    p.add_argument("--lists", type=Path, default=None,
                   help="the mpeg-vcm folder holding the lists (default: $VCM_SHARED or ../shared, "
                        "/data/openimages/mpeg-vcm)")
    p.add_argument("--jobs", "-j", type=int, default=4, help="download threads (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """``vcm download openimages``: prints the summary; exit 0 when complete, 3 when some images failed."""
    from vcm_plugin.datasets.download import download_openimages

    report = download_openimages(args.subset, args.output, args.lists, jobs=args.jobs, progress=not args.quiet)
    print(report.summary())
    return 0 if report.ok else 3
