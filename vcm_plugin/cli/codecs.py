"""``vcm codecs``: list codecs, whether they run here, and their quality parameter."""

from __future__ import annotations

import argparse
import textwrap

#: Width of ``vcm codecs`` lines: reasons why a codec is unavailable wrap under its row.
CODECS_TABLE_WIDTH = 120


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm codecs``."""
    p = sub.add_parser("codecs", help="list codecs, whether they run here, and their quality parameter")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Print the codec table."""
    from vcm_plugin.codecs.registry import available_codecs

    infos = available_codecs()
    rows = [(c.name, "yes" if c.availability else "no:", c.quality, c.output_point) for c in infos]
    header = ("codec", "available", "quality (range, direction)", "output")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(3)]
    indent = " " * (widths[0] + 2)
    for row, info in zip([header, *rows], [None, *infos]):
        line = "  ".join(str(cell).ljust(widths[i]) if i < 3 else str(cell) for i, cell in enumerate(row))
        print(line.rstrip()[:CODECS_TABLE_WIDTH])
        if info is not None and not info.availability:
            for part in textwrap.wrap(info.availability.reason, CODECS_TABLE_WIDTH - len(indent) - 2,
                                      break_on_hyphens=False):
                print(f"{indent}  {part}")
    return 0
