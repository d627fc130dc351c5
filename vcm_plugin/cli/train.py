"""``vcm train [KIND] CONFIG [KEY=VALUE ...]``: train a learned codec, task codec or classifier."""

from __future__ import annotations

import argparse

from vcm_plugin.cli.common import CLIError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm train``."""
    from vcm_plugin.training import TRAINERS

    p = sub.add_parser("train", help="train a learned codec, task codec or classifier from a YAML config (resumable)",
                       description=f"vcm train [KIND] CONFIG [KEY=VALUE ...]; KIND one of {sorted(TRAINERS)} "
                                   "(default: the config's `kind`)")
    p.add_argument("words", nargs="+", metavar="[KIND] CONFIG [KEY=VALUE]",
                   help="what to train (optional when the config has `kind:`), the YAML config, overrides")
    p.add_argument("--output", "-o", help="output folder (default: the config's `output`)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Dispatch to the trainer named by KIND or by the config's ``kind``."""
    from vcm_plugin.training import TRAINERS, kind_of_config, run_trainer

    words = list(args.words)
    if words[0] in TRAINERS:
        kind = words.pop(0)
        if not words:
            raise CLIError(f"vcm train {kind}: missing the CONFIG file")
    else:
        kind = kind_of_config(words[0])
    return run_trainer(kind, words[0], words[1:], args.output, args.quiet)
