"""``vcm cache``: the shared unit cache of ``vcm run`` -- ``list`` its entries, ``prune`` them, ``import`` a run
folder's units into it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vcm_plugin.cli.common import CLIError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm cache list``, ``vcm cache prune`` and ``vcm cache import``."""
    p = sub.add_parser(
        "cache", help="the shared unit cache of `vcm run`: list its entries, prune them, import a run's units",
        description="`vcm run` reuses the units (bits, times, predictions) that any earlier run computed, from one "
                    "cache shared by every output folder, keyed by everything that determines a unit. The cache "
                    "folder: `cache:` in the run config, else $VCM_CACHE, else $XDG_CACHE_HOME/vcm-plugin/units "
                    "(~/.cache/vcm-plugin/units); `cache: null` or VCM_CACHE=off turns it off.")
    commands = p.add_subparsers(dest="cache_command", required=True, metavar="{list,prune,import}")
    listing = commands.add_parser("list", help="units per codec and task model, size on disk, path")
    prune = commands.add_parser("prune", help="remove cached units (by age, by codec, or all)")
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="units stored more than DAYS days ago")
    prune.add_argument("--codec", metavar="NAME", help="units of the registered codec NAME (as `vcm cache list` shows)")
    prune.add_argument("--all", action="store_true", help="the whole cache (removes its files; a damaged one too)")
    seed = commands.add_parser("import", help="seed the cache with the finished units of existing run folders "
                                              "(e.g. anchors computed before the cache existed)")
    seed.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a `vcm run` output folder (its results.sqlite)")
    for command in (listing, prune, seed):
        command.add_argument("--cache", metavar="PATH", help="the cache folder (default: $VCM_CACHE, else "
                                                             "$XDG_CACHE_HOME/vcm-plugin/units or "
                                                             "~/.cache/vcm-plugin/units)")
    p.set_defaults(func=cmd)


def _folder(args: argparse.Namespace) -> Path | None:
    from vcm_plugin.results.cache import resolve_cache_dir

    return resolve_cache_dir(args.cache) if args.cache else resolve_cache_dir()


def _size(n: int) -> str:
    """Bytes, KiB, MiB or GiB."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def cmd(args: argparse.Namespace) -> int:
    """``list``: one line per codec and task model; ``prune``: remove units; ``import``: copy a run's units in;
    the last two print how many."""
    from vcm_plugin.results.cache import CACHE_FILE, cache_entries, cache_size, import_run, prune_cache
    from vcm_plugin.results.tables import STORE_NAME

    folder = _folder(args)
    if folder is None:
        if args.cache_command == "import":
            raise CLIError("vcm cache import: the shared unit cache is off (VCM_CACHE=off); give --cache PATH")
        print("the shared unit cache is off (VCM_CACHE=off); give --cache PATH")
        return 0
    path = folder / CACHE_FILE
    if args.cache_command == "import":
        for run in args.runs:
            imported, held = import_run(folder, run)
            print(f"imported {imported} unit(s) from {Path(run) / STORE_NAME} into {path}"
                  f"{f' ({held} already cached)' if held else ''}")
        return 0
    if args.cache_command == "prune":
        if args.older_than is not None and args.older_than < 0:
            raise CLIError(f"--older-than {args.older_than:g}: DAYS must be at least 0")
        if not (args.all or args.older_than is not None or args.codec):
            raise CLIError("vcm cache prune: give --older-than DAYS, --codec NAME or --all")
        removed = prune_cache(folder, args.older_than, args.codec, everything=args.all)
        print(f"removed {removed} unit(s) from {path}; {_size(cache_size(folder))} on disk")
        return 0
    entries = cache_entries(folder)
    print(f"{path}: {sum(e[2] for e in entries)} unit(s), {_size(cache_size(folder))} on disk")
    if entries:
        print(f"{'codec':<24}{'task model':<24}{'units':>8}  {'stored from':<16}  {'to':<16}")
        for codec, task, units, first, last in entries:
            since, until = (time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) for t in (first, last))
            print(f"{codec:<24}{task:<24}{units:>8}  {since:<16}  {until:<16}")
    return 0
