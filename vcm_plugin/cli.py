"""The ``vcm`` command line.

Every error caused by an input (file, codec, quality, curve) exits with status 2 and
one line on stderr naming that input; no traceback. Unexpected failures still show
one.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vcm_plugin.codecs.base import Bitstream
from vcm_plugin.errors import VcmError
from vcm_plugin.safe_yaml import safe_load

EXIT_INPUT_ERROR = 2


class CLIError(VcmError):
    """A bad command-line argument."""


# -- helpers ----------------------------------------------------------------------------
def parse_params(items: Sequence[str] | None, where: str = "--param") -> dict[str, Any]:
    """Parse ``key=value`` items; values are YAML scalars (``3`` -> int, ``true`` -> bool)."""
    params: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"{where} {item!r}: expected key=value")
        try:
            params[key] = safe_load(value) if value else ""
        except yaml.YAMLError as exc:
            raise CLIError(f"{where} {item!r}: cannot parse the value ({exc})") from exc
    return params


def parse_quality(text: str) -> int | float:
    """A quality given on the command line: int when integral, else float."""
    try:
        value = float(text)
    except ValueError:
        raise CLIError(f"quality {text!r} is not a number") from None
    return int(value) if value.is_integer() and "." not in text else value


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _write_file(path: str, data: bytes) -> None:
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


def check_output(output: str, inputs: dict[str, str | None], force: bool) -> None:
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


def _format_points(points: Sequence[Any]) -> str:
    return "; ".join(str(p) for p in points) if points else "none"


# -- commands ---------------------------------------------------------------------------
#: Width of ``vcm codecs`` lines: reasons why a codec is unavailable wrap under its row.
CODECS_TABLE_WIDTH = 120


def cmd_codecs(args: argparse.Namespace) -> int:
    import textwrap

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


def cmd_encode(args: argparse.Namespace) -> int:
    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.images.io import read_image

    check_output(args.output, {"input image": args.input}, args.force)
    codec = get_codec(args.codec, **parse_params(args.param))
    image = read_image(args.input)
    bitstream = codec.encode(image, parse_quality(args.quality))
    _write_file(args.output, bitstream.to_bytes())
    print(f"{args.input} -> {args.output}: codec {bitstream.codec}, {codec.quality_range.name} {bitstream.quality}, "
          f"{bitstream.width}x{bitstream.height}, {len(bitstream.data)} bytes = {bitstream.num_bits} bits, "
          f"{bitstream.bpp:.6f} bpp")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from vcm_plugin.codecs.registry import codec_names, get_codec, get_codec_class
    from vcm_plugin.errors import UnknownCodecError
    from vcm_plugin.images.io import write_image

    check_output(args.output, {"input bitstream": args.input, "--reference image": args.reference}, args.force)
    given = parse_params(args.param)
    bitstream = Bitstream.from_bytes(_read_file(args.input), source=args.input)
    try:
        get_codec_class(bitstream.codec)
    except UnknownCodecError:
        raise CLIError(f"{args.input} was made by codec {bitstream.codec!r}, which is not installed here "
                       f"(installed: {', '.join(codec_names())})") from None
    stored = bitstream.params or {}
    for key, value in given.items():
        if key in stored and stored[key] != value:
            raise CLIError(f"--param {key}={value!r} contradicts {key}={stored[key]!r} stored in {args.input} "
                           f"(the parameters the stream was encoded with); leave --param {key} out")
    try:
        codec = get_codec(bitstream.codec, **{**stored, **given})
    except VcmError as exc:
        if not stored:
            raise
        raise CLIError(f"{args.input}: cannot build codec {bitstream.codec!r} with the parameters stored in the "
                       f"file: {exc}") from exc
    image = codec.decode(bitstream)
    write_image(args.output, image)
    print(f"{args.input} -> {args.output}: codec {bitstream.codec}, {bitstream.width}x{bitstream.height}, "
          f"{bitstream.bpp:.6f} bpp")
    if args.reference:
        from vcm_plugin.images.io import read_image
        from vcm_plugin.images.metrics import psnr_rgb, psnr_y

        reference = read_image(args.reference)
        if reference.shape != image.shape:
            raise CLIError(f"--reference {args.reference}: size {reference.shape[1]}x{reference.shape[0]} differs "
                           f"from the decoded {image.shape[1]}x{image.shape[0]}")
        print(f"PSNR-Y {psnr_y(reference, image):.3f} dB, PSNR-RGB {psnr_rgb(reference, image):.3f} dB")
    return 0


#: How the command line spells the option that enables the monotone envelope (in error hints).
ENVELOPE_FLAG = "--non-monotonic envelope"


def check_min_overlap(value: float) -> None:
    """Refuse a ``--min-overlap`` outside [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise CLIError(f"--min-overlap {value:g}: must be within 0..1 (a fraction of the narrower curve's range)")


def cmd_bd_rate(args: argparse.Namespace) -> int:
    from vcm_plugin.evaluation.bd import BDOverlapError, bd_metric_report, bd_rate_report, load_curve_csv

    check_min_overlap(args.min_overlap)
    anchor = load_curve_csv(args.anchor)
    test = load_curve_csv(args.test)
    kwargs: dict[str, Any] = dict(method=args.method, non_monotonic=args.non_monotonic, min_overlap=args.min_overlap,
                                  anchor_name=args.anchor, test_name=args.test, envelope_option=ENVELOPE_FLAG)
    # each delta is computed or marked n/a on its own: JPEG-vs-VVC PSNR curves overlap fully in
    # metric (BD-rate fine) but often little in rate (BD-metric refused), or the reverse
    results, reasons = {}, {}
    for kind, func in (("rate", bd_rate_report), ("metric", bd_metric_report)):
        try:
            results[kind] = func(*anchor, *test, **kwargs)
        except BDOverlapError as exc:
            reasons[kind] = str(exc)
    if not results:
        raise CLIError(f"neither BD-rate nor BD-metric can be computed: {reasons['rate']}; {reasons['metric']}; "
                       "--min-overlap lowers the threshold")
    if "rate" in results:
        print(f"BD-rate ({args.method}): {results['rate'].value:+.3f} %  (negative = {args.test} saves bits)")
    else:
        print(f"BD-rate ({args.method}): n/a: {reasons['rate']}")
    if "metric" in results:
        print(f"BD-metric ({args.method}): {results['metric'].value:+.5f}  (positive = {args.test} is better)")
    else:
        print(f"BD-metric ({args.method}): n/a: {reasons['metric']}")
    first = next(iter(results.values()))
    if first.envelope_used:
        print(f"monotone envelope dropped: anchor {args.anchor}: {_format_points(first.anchor_dropped)}; "
              f"test {args.test}: {_format_points(first.test_dropped)}")
    return 0


def _parse_codec_arg(text: str, params: dict[str, dict[str, Any]]):
    from vcm_plugin.evaluation.rd import CodecSpec

    name, sep, qualities = text.partition(":")
    if not sep or not qualities:
        raise CLIError(f"--codec {text!r}: expected NAME:Q1,Q2,... (e.g. vvc:42,37,32,27)")
    return CodecSpec(name, tuple(parse_quality(q) for q in qualities.split(",")), params.get(name, {}))


def cmd_compare(args: argparse.Namespace) -> int:
    from vcm_plugin.evaluation.bd import bd_rate_report
    from vcm_plugin.evaluation.rd import measure

    if args.sample:
        from vcm_plugin import sample

        images = [str(p) for p in sample.kodak_images()]
    else:
        images = list(args.images)
    if not images:
        raise CLIError("no images: give image files or --sample kodak")
    for path in images:
        if not os.path.isfile(path):
            raise CLIError(f"image {path}: no such file")
    params: dict[str, dict[str, Any]] = {}
    for name, value in parse_params(args.codec_param, "--codec-param").items():
        codec, dot, key = name.partition(".")
        if not dot:
            raise CLIError(f"--codec-param {name}: expected CODEC.KEY=VALUE")
        params.setdefault(codec, {})[key] = value
    specs = [_parse_codec_arg(text, params) for text in args.codec]
    check_jobs(args.jobs)
    anchor = [s for s in specs if s.name == args.anchor or s.label == args.anchor] if args.anchor else []
    if args.anchor and not anchor:  # checked before any coding
        raise CLIError(f"--anchor {args.anchor!r} is not one of the --codec names "
                       f"({', '.join(s.label for s in specs)})")
    points = measure(specs, images, jobs=args.jobs, progress=not args.quiet)

    print(f"\n{len(images)} image(s); bpp = total bits / total original pixels; PSNR = mean over images (dB)")
    print(f"{'codec':<14}{'quality':>8}{'bpp':>10}{'PSNR-Y':>9}{'PSNR-RGB':>10}{'enc ms/MP':>11}{'dec ms/MP':>11}")
    for p in points:
        print(f"{p.codec:<14}{p.quality!s:>8}{p.bpp:>10.4f}{p.psnr_y:>9.2f}{p.psnr_rgb:>10.2f}"
              f"{p.encode_ms_per_mp:>11.0f}{p.decode_ms_per_mp:>11.0f}")
    if args.csv:
        rows = [p.as_row() for p in points]
        try:
            with open(args.csv, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        except OSError as exc:
            raise CLIError(f"cannot write {args.csv}: {exc.strerror or exc}") from exc
    if anchor:
        a_pts = [p for p in points if p.codec == anchor[0].label]
        print(f"\nBD-rate (PSNR-Y, pchip) against {anchor[0].label}; negative = fewer bits than the anchor")
        for spec in specs:
            if spec is anchor[0]:
                continue
            t_pts = [p for p in points if p.codec == spec.label]
            try:
                report = bd_rate_report([p.bpp for p in a_pts], [p.psnr_y for p in a_pts],
                                        [p.bpp for p in t_pts], [p.psnr_y for p in t_pts],
                                        anchor_name=anchor[0].label, test_name=spec.label,
                                        non_monotonic=args.non_monotonic, envelope_option=ENVELOPE_FLAG)
                print(f"  {spec.label:<14}{report.value:+8.2f} %")
            except VcmError as exc:
                print(f"  {spec.label:<14} n/a: {exc}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
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


def cmd_run(args: argparse.Namespace) -> int:
    from vcm_plugin.config import load_config
    from vcm_plugin.pipeline.run import run

    check_jobs(args.jobs)
    config = load_config(args.config, args.overrides)
    summary = run(config, output=args.output, jobs=args.jobs, quiet=args.quiet)
    return 0 if summary.units_failed == 0 or args.allow_failures else 3


# -- entry point ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from vcm_plugin.evaluation.bd import DEFAULT_MIN_OVERLAP

    parser = argparse.ArgumentParser(prog="vcm", description="vcm-plugin: image coding for machines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("codecs", help="list codecs, whether they run here, and their quality parameter")
    p.set_defaults(func=cmd_codecs)

    p = sub.add_parser("zoo", help="list the project's own trained models (learned codecs, CIFAR-10 classifier)")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("encode", help="encode an image into a .vcmb bitstream file")
    p.add_argument("--codec", required=True)
    p.add_argument("--quality", "-q", required=True, help="the codec's quality parameter (see `vcm codecs`)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="codec parameter (repeatable); stored in the .vcmb file for `vcm decode`")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists (never the input image)")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a .vcmb bitstream file (the file names its codec) to an image")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="codec parameter (repeatable); the file stores those used at encoding (format version 2) "
                        "and they are used; a --param contradicting a stored one is an error. Needed only for "
                        "version-1 files made with non-default parameters (e.g. matrix=bt601)")
    p.add_argument("--reference", help="original image: also print PSNR-Y and PSNR-RGB")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists (never an input)")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser(
        "bd-rate", help="Bjontegaard delta between two rate-metric curves (CSV: rate,metric)",
        description="BD-rate (percent, negative = the test curve saves bits) and BD-metric (metric units, positive "
                    "= the test curve is better) of TEST against ANCHOR. Each is reported on its own: BD-rate needs "
                    "the curves to overlap in metric, BD-metric in log10(rate) (by at least --min-overlap of the "
                    "narrower range); the one that cannot be computed is printed as 'n/a' with the reason. Exit "
                    "status 0 when at least one is computed, 2 when neither is or an input is invalid.")
    p.add_argument("anchor")
    p.add_argument("test")
    p.add_argument("--method", default="pchip", choices=["pchip", "akima", "cubic"])
    p.add_argument("--non-monotonic", default="error", choices=["error", "envelope"],
                   help="what to do with a metric that is not increasing in rate (envelope: drop dominated points)")
    p.add_argument("--min-overlap", type=float, default=DEFAULT_MIN_OVERLAP, metavar="FRACTION",
                   help="least overlap of the curves on the integration axis, as a fraction of the narrower range "
                        "(default %(default)s)")
    p.set_defaults(func=cmd_bd_rate)

    p = sub.add_parser("compare", help="rate-PSNR points of codecs on images, and BD-rate against an anchor")
    p.add_argument("images", nargs="*")
    p.add_argument("--sample", choices=["kodak"], help="use the embedded Kodak sample images")
    p.add_argument("--codec", action="append", required=True, metavar="NAME:Q1,Q2,...")
    p.add_argument("--codec-param", action="append", metavar="CODEC.KEY=VALUE")
    p.add_argument("--anchor", help="codec name to compute BD-rate against")
    p.add_argument("--non-monotonic", default="error", choices=["error", "envelope"],
                   help="BD-rate of curves whose PSNR is not increasing in rate: error (n/a) or envelope")
    p.add_argument("--jobs", "-j", type=int, default=None, help="worker processes, at least 1 (default: all cores)")
    p.add_argument("--csv", help="also write the points to this CSV file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)

    from vcm_plugin.analysis.cli import add_appropriateness_parser
    from vcm_plugin.datasets.download import add_download_parser
    from vcm_plugin.evaluation.oid_cli import add_oid_eval_parser
    from vcm_plugin.splitting.layers import add_layers_parser
    from vcm_plugin.training import add_train_parser

    add_oid_eval_parser(sub)
    add_download_parser(sub)
    add_train_parser(sub)
    add_layers_parser(sub)
    add_appropriateness_parser(sub)

    p = sub.add_parser("run", help="run an evaluation config: code, decode, score, report (resumable)")
    p.add_argument("config", help="YAML config (see eval_configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. dataset.max_images=8")
    p.add_argument("--output", "-o", help="output folder (default: the config's `output`)")
    p.add_argument("--jobs", "-j", type=int,
                   help="worker processes, at least 1 (default: the config's, else all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when some units failed (they are listed in failures.csv)")
    p.set_defaults(func=cmd_run)
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

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return f"vcm: {record.levelname.lower()}: {record.getMessage()}"


def configure_logging(level: int = logging.WARNING) -> None:
    """Show the library's log records (e.g. datasets' skipped images) as ``vcm: warning: ...`` lines."""
    logger = logging.getLogger("vcm_plugin")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `vcm run CONFIG --output D key=value`: overrides may follow options
        takes_overrides = getattr(args, "command", None) in ("run", "train")
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


if __name__ == "__main__":
    sys.exit(main())
