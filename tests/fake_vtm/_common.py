"""Shared helpers of the fake VTM programs used by tests/test_vtm.py (not VTM itself)."""

from __future__ import annotations

import sys

MAGIC = b"FAKEVTM1"


def parse(argv: list[str]) -> dict[str, str]:
    """Parse VTM-style options: ``-x value``, ``--Name=value`` (a repeated option keeps the last)."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            opts[key] = value
            i += 1
        elif arg.startswith("-") and i + 1 < len(argv):
            opts[arg.lstrip("-")] = argv[i + 1]
            i += 2
        else:
            sys.exit(f"fake VTM: cannot parse argument {arg!r}")
    return opts


def require(opts: dict[str, str], key: str, value: str | None = None) -> str:
    """The option ``key``; exit non-zero when missing or not ``value``."""
    if key not in opts:
        sys.exit(f"fake VTM: option {key} missing")
    if value is not None and opts[key] != value:
        sys.exit(f"fake VTM: option {key} is {opts[key]!r}, expected {value!r}")
    return opts[key]
