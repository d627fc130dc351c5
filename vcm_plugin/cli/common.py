"""What the ``vcm`` subcommands share: :class:`CLIError`, the ``--param`` parser, quality and file checks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vcm_plugin.errors import InputError
from vcm_plugin.safe_yaml import parse_key_value

#: How the command line spells the option that enables the monotone envelope (in error hints).
ENVELOPE_FLAG = "--non-monotonic envelope"


class CLIError(InputError):
    """A bad command-line argument."""


def parse_params(items: Sequence[str] | None, where: str = "--param") -> dict[str, Any]:
    """Parse ``key=value`` items; values are YAML scalars (``3`` -> int, ``true`` -> bool)."""
    return dict(parse_key_value(item, where, CLIError) for item in items or ())


def parse_quality(text: str) -> int | float:
    """A quality given on the command line: int when integral, else float."""
    try:
        value = float(text)
    except ValueError:
        raise CLIError(f"quality {text!r} is not a number") from None
    return int(value) if value.is_integer() and "." not in text else value


def read_file(path: str) -> bytes:
    """The bytes of ``path``; :class:`CLIError` naming it when unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from exc


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path``; :class:`CLIError` naming it when unwritable."""
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (``os.path.samefile`` when both exist)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_output_file(output: str, inputs: dict[str, str | None], force: bool) -> None:
    """Refuse an ``output`` path that is one of ``inputs`` (what -> path), or an existing file unless ``force``.

    Checked before any work, so that a mistyped command never replaces a source image
    with a bitstream (or a bitstream with a picture).
    """
    for what, path in inputs.items():
        if path and _same_file(output, path):
            raise CLIError(f"output {output} is the same file as the {what} {path}; give another output path")
    if os.path.isdir(output):
        raise CLIError(f"output {output} is a directory; give a file path")
    if os.path.lexists(output) and not force:
        raise CLIError(f"output {output} already exists; pass --force to overwrite it")


def check_jobs(jobs: int | None, flag: str = "--jobs") -> None:
    """Refuse a worker count below 1 (``None`` = the default)."""
    if jobs is not None and jobs < 1:
        raise CLIError(f"{flag} {jobs}: the number of worker processes must be at least 1")
