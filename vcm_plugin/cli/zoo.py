"""``vcm zoo``: list the project's own trained models; ``vcm zoo publish``: add a trained codec to it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm zoo`` and ``vcm zoo publish``."""
    p = sub.add_parser("zoo", help="list the project's own trained models (learned codecs, CIFAR-10 classifier)")
    p.set_defaults(func=cmd)
    publish = p.add_subparsers(dest="zoo_command", metavar="publish").add_parser(
        "publish", help="copy RUN_DIR/model.pt (a `vcm train codec` export) into the zoo with its model card")
    publish.add_argument("run_dir", type=Path)
    publish.add_argument("--name", required=True)
    publish.add_argument("--group", required=True)
    publish.add_argument("--quality", type=int, required=True)
    publish.add_argument("--command", required=True, help="the exact training command (recorded in the card)")
    publish.set_defaults(func=cmd_publish)


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


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish a trained codec; prints the model card's path (a bad run folder is a ZooError)."""
    from vcm_plugin.zoo.publish import publish_codec

    print(publish_codec(args.run_dir, args.name, args.group, args.quality, args.command))
    return 0
