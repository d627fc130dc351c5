"""``vcm report RUN``: write a run's reports again from its results store (``--format default|cttc``)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm report``."""
    from vcm_plugin.reports.formats import FORMATS

    p = sub.add_parser("report", help="write a run's reports again from its results store (default or CTTC)")
    p.add_argument("run", metavar="RUN", help="a run's output folder (holds results.sqlite and config.yaml)")
    p.add_argument("--format", "-f", action="append", choices=FORMATS, dest="formats",
                   help="report format, repeatable: default (results.csv, BD-rate, plots) or cttc (the MPEG FCM "
                        "CTTC template's CSV / XLSX in RUN/cttc); default: the run config's report.formats")
    p.add_argument("--quiet", action="store_true", help="no BD-rate table or summary lines")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Rebuild the run's dataset from its config.yaml and write the reports."""
    from pathlib import Path

    from vcm_plugin.datasets.registry import get_dataset
    from vcm_plugin.reports.formats import check_report_formats, write_report_formats
    from vcm_plugin.results.tables import run_config

    folder, config = Path(args.run), run_config(args.run)
    check_report_formats(config, args.formats)
    dataset = get_dataset(config.dataset.name, **config.dataset_params())
    paths = write_report_formats(config, dataset, folder, args.formats, log=None if args.quiet else print)
    if not args.quiet:
        print(f"wrote {len(paths)} file(s) into {folder}")
    return 0
