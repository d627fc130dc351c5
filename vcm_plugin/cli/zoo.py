"""``vcm zoo``: list the project's own trained models."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm zoo``."""
    p = sub.add_parser("zoo", help="list the project's own trained models (learned codecs, CIFAR-10 classifier)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Print the zoo table."""
    from vcm_plugin.zoo import zoo_entries

    entries = zoo_entries()
    if not entries:
        print("the project zoo is empty")
        return 0
    print(f"{'name':<22}{'kind':<12}{'architecture':<24}{'quality':<9}{'bytes':>10}  trained here by")
    for e in entries.values():
        size = e.path.stat().st_size if e.path.is_file() else 0
        print(f"{e.name:<22}{e.kind:<12}{e.architecture:<24}{'' if e.quality is None else e.quality!s:<9}"
              f"{size:>10}  {e.training.get('command', '?')}")
    return 0
