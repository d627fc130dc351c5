"""The ``vcm`` entry point: the parser of every subcommand, logging, signals and exit statuses.

Every error caused by an input (file, codec, quality, curve) exits with status 2 and
one line on stderr naming that input; no traceback. Unexpected failures still show
one.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from vcm_plugin.cli import (
    appropriateness,
    bd_rate,
    build_sample,
    cache,
    check_codec,
    codecs,
    compare,
    decode,
    doctor,
    download,
    encode,
    inspect,
    layers,
    oid_eval,
    report,
    run,
    train,
    verify,
    zoo,
)
from vcm_plugin.errors import VcmError

#: Exit status of a command refused for a bad input (one ``vcm: error: ...`` line on stderr).
EXIT_INPUT_ERROR = 2

#: The subcommand modules, in the order ``vcm --help`` lists them; each has ``add_parser(sub)`` and ``cmd(args)``.
COMMANDS = (codecs, check_codec, doctor, zoo, encode, decode, bd_rate, compare, oid_eval, download, train, layers,
            appropriateness, run, cache, report, inspect, verify, build_sample)


def build_parser() -> argparse.ArgumentParser:
    """The ``vcm`` parser with every subcommand (each sets ``func``)."""
    parser = argparse.ArgumentParser(prog="vcm", description="vcm-plugin: image coding for machines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


#: What an interrupted command keeps, after "vcm: interrupted".
_RESUME_HINTS = {
    "run": "; finished units are stored, rerun the same command to resume",
    "train": "; rerun the same command to resume from the last checkpoint",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM (or another stop signal) received: stops the command like Ctrl-C; ``signum`` gives the exit status."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _stop_on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; the previous handler, or None when not installed.

    Python's default for SIGTERM is to die on the spot, which skips every cleanup (the
    worker processes of ``vcm run --jobs N`` were left running).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


class _StderrHandler(logging.StreamHandler):
    """Log records as one line, ``vcm: warning: ...``, on the CURRENT ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # under the handler's lock
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        return f"vcm: {record.levelname.lower()}: {record.getMessage()}"


def configure_logging(level: int = logging.INFO) -> None:
    """Show the library's log records (info lines, datasets' skipped images) as ``vcm: info: ...`` lines."""
    logger = logging.getLogger("vcm_plugin")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    configure_logging(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)  # --quiet: no info lines
    if extra:  # `vcm run CONFIG --output D key=value`: overrides may follow options
        takes_overrides = getattr(args, "command", None) in ("run", "train", "check-codec")
        if not takes_overrides or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    previous_sigterm = _stop_on_sigterm()
    try:
        return args.func(args)
    except VcmError as exc:
        print(f"vcm: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see _stop_on_sigterm)
        executors = sys.modules.get("vcm_plugin.pipeline.executors")
        if executors is not None:  # no worker outlives the interrupted run
            executors.stop_local_pools()
        signum = getattr(exc, "signum", signal.SIGINT)
        how = "interrupted" if signum == signal.SIGINT else f"interrupted by {signal.Signals(signum).name}"
        hint = _RESUME_HINTS.get(getattr(args, "command", None) or "", "")
        print(f"vcm: {how}{hint}", file=sys.stderr)
        return 128 + int(signum)
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)

