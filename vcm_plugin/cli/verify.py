"""``vcm verify RUN_A RUN_B``: do two run folders hold the same results? Where and how do they diverge?"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm verify``."""
    p = sub.add_parser(
        "verify", help="compare two run folders unit by unit (bitstreams, decoded outputs, predictions)",
        description="Matches the units of two `vcm run` output folders by codec label, quality, scale, task and "
                    "image id, and compares their unit keys, bitstream and decoded-output SHA-256 and predictions "
                    "(exactly; the max abs difference of scores / boxes where they differ). Prints the first "
                    "diverging units, a count per kind, and the differences of the configs and of the manifests "
                    "(versions, CPU, threads), which explain a divergence but are not one. Exit status 0 when every "
                    "common unit is identical, 1 when they diverge (or no unit is common), 2 for a bad input.")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--show", type=int, default=10, metavar="N", help="diverging units listed (default %(default)s)")
    p.set_defaults(func=cmd)


def _short(value: Any, limit: int = 70) -> str:
    text = "absent" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _value_change(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list):  # e.g. the CPU flags: what each side has alone
        only_a, only_b = sorted(set(map(str, a)) - set(map(str, b))), sorted(set(map(str, b)) - set(map(str, a)))
        return f"only in A: {_short(' '.join(only_a)) or '-'}; only in B: {_short(' '.join(only_b)) or '-'}"
    return f"{_short(a)} | {_short(b)}"


def _label(label: tuple) -> str:
    codec, quality, scale, task, image_id = label
    q = "" if quality is None else f" q {quality}"
    s = "" if scale == 1.0 else f" scale {scale:g}"
    return f"{codec}{q}{s}, task {task}, image {image_id}"


def cmd(args: argparse.Namespace) -> int:
    """Print the comparison of ``args.run_a`` with ``args.run_b``; 0 identical, 1 divergent."""
    from vcm_plugin.cli.common import CLIError
    from vcm_plugin.results.verify import verify_runs

    if args.show < 0:
        raise CLIError(f"--show {args.show}: must be 0 or more")
    result = verify_runs(args.run_a, args.run_b)
    print(f"A: {result.a}\nB: {result.b}")
    if result.config:
        print(f"configs differ in {len(result.config)} key(s) (output left out):")
        for key, a, b in result.config:
            print(f"  {key}: {_value_change(a, b)}")
    else:
        print("configs: identical (output left out)")
    for note in result.notes:
        print(f"manifest: {note}")
    if result.manifest:
        print(f"manifests differ in {len(result.manifest)} entr{'y' if len(result.manifest) == 1 else 'ies'} "
              "(A | B):")
        for key, a, b in result.manifest:
            print(f"  {key}: {_value_change(a, b)}")
    elif not result.notes:
        print("manifests: identical (versions, ffmpeg, CPU, threads, codec profiles)")
    print(f"units: {result.common} common, {len(result.only_a)} only in A, {len(result.only_b)} only in B")
    for name, only in (("A", result.only_a), ("B", result.only_b)):
        for label in only[: args.show]:
            print(f"  only in {name}: {_label(label)}")
    if result.identical:
        print(f"identical: all {result.common} common units have the same bitstream, decoded output and "
              "predictions")
        return 0
    if not result.common:
        print("divergent: the runs have no unit in common")
        return 1
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(result.counts().items()))
    print(f"divergent: {len(result.differences)} of {result.common} common units differ ({counts})")
    for diff in result.differences[: args.show]:
        details = "; ".join(f"{kind}: {diff.details[kind]}" for kind in diff.kinds)
        print(f"  {_label(diff.label)}: {details}")
    if len(result.differences) > args.show:
        print(f"  ... and {len(result.differences) - args.show} more (--show N)")
    return 1
