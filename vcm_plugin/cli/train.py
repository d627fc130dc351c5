"""``vcm train [KIND] CONFIG [KEY=VALUE ...] [--grid Q:LMBDA:STEPS ...]``: train a codec, task codec or classifier."""

from __future__ import annotations

import argparse

from vcm_plugin.cli.common import CLIError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm train``."""
    from vcm_plugin.training import TRAINERS

    p = sub.add_parser("train", help="train a learned codec, task codec or classifier from a YAML config (resumable)",
                       description=f"vcm train [KIND] CONFIG [KEY=VALUE ...]; KIND one of {sorted(TRAINERS)} "
                                   "(default: the config's `kind`). Rerun the same command after a crash or kill -9 "
                                   "to resume from the last checkpoint.")
    p.add_argument("words", nargs="+", metavar="[KIND] CONFIG [KEY=VALUE]",
                   help="what to train (optional when the config has `kind:`), the YAML config, overrides")
    p.add_argument("--output", "-o", help="output folder (default: the config's `output`)")
    p.add_argument("--grid", nargs="+", metavar="Q:LMBDA:STEPS",
                   help="one run per point (quality, lambda, steps), {quality} in the output and overrides replaced "
                        "by Q, e.g. `vcm train direct_yolov5n.yaml output=runs/q{quality} --grid 1:1:200 2:2.5:120`;"
                        " a point with a result.json is skipped, an unfinished one resumes")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines (log level WARNING)")
    p.set_defaults(func=cmd, overrides=[])


def cmd(args: argparse.Namespace) -> int:
    """Dispatch to the trainer named by KIND or by the config's ``kind`` (once per ``--grid`` point)."""
    from vcm_plugin.training import TRAINERS, kind_of_config, run_trainer
    from vcm_plugin.training.grid import grid_point, train_grid

    grid = [g for g in args.grid or () if "=" not in g]
    words = [*args.words, *(g for g in args.grid or () if "=" in g), *args.overrides]  # overrides after --grid
    if words[0] in TRAINERS:
        kind = words.pop(0)
        if not words:
            raise CLIError(f"vcm train {kind}: missing the CONFIG file")
    else:
        kind = kind_of_config(words[0])
    if args.grid is not None:
        train_grid(kind, words[0], [grid_point(g) for g in grid], words[1:], args.output)
    else:
        run_trainer(kind, words[0], words[1:], args.output)
    return 0
