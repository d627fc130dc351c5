"""The fixed per-picture cost of the ffmpeg codecs at 32x32, 227x227 and 768x512, old path vs new.

Three ways of running the same ffmpeg commands, each checked to give the same bytes:

- ``old``: one ffmpeg process per command, waited for by ``Popen.wait(timeout)`` (the
  runner before the fork server; that wait polls with doubling sleeps of 0.5..50 ms, so
  a command's time is rounded up to ~16, 32, 64 ... ms);
- ``plain``: one process per command, waited for on its pipes (``VCM_FFMPEG_SERVER=0``);
- ``new``: the default, the ffmpeg fork server (:mod:`vcm_plugin.ffmpeg_server`).

First, where the fixed cost goes (ffmpeg start, the pipe pass-through of one picture,
the Y'CbCr conversion by swscale, each decoder with and without the conversion back to
RGB); then per codec and size the encode and decode milliseconds per picture of each
path, their sum, and the ratios plain / new and old / new of the sum (at 32x32 the sum is
nearly all fixed cost). Crops of kodim23 (the embedded sample). The medians (``--stat min``:
the least) of ``--repeats`` runs, the paths taking turns so that other jobs slow them
alike; the machine's core count and load average are printed. Run:
``.venv/bin/python benchmarks/small_pictures.py`` (``--repeats 9``, ``--stat min``,
``--codecs vvc,webp``, ``--sizes 32x32,227x227``, ``--no-breakdown``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

import vcm_plugin.codecs.ffmpeg as codec_module
from vcm_plugin import get_codec, read_image
from vcm_plugin.codecs.ffmpeg import ColourConversion, FFmpegCodec
from vcm_plugin.ffmpeg import FFmpegError, convert_command, find_ffmpeg, run_ffmpeg, summarise_log
from vcm_plugin.ffmpeg_server import get_server
from vcm_plugin.sample import kodak_images

# label -> (codec name, parameters, quality): the defaults, and the ImageNet config's VVC
CODECS: dict[str, tuple[str, dict, float]] = {
    "vvc": ("vvc", {}, 32),
    "vvc-faster-t1": ("vvc", {"preset": "faster", "threads": 1}, 32),
    "hevc": ("hevc", {}, 32),
    "av1": ("av1", {}, 32),
    "jxl": ("jxl", {}, 1.0),
    "webp": ("webp", {}, 75),
}


def old_run_ffmpeg(command: list[str], stdin: bytes, timeout: float) -> bytes:
    """The runner before the fork server, verbatim in behaviour (the ``old`` path)."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([*command[:-1], f"pipe:{write_fd}"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(write_fd,))
    os.close(write_fd)
    chunks: list[bytes] = []
    errors: list[bytes] = []

    def feed() -> None:
        try:
            proc.stdin.write(stdin)  # type: ignore[union-attr]
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]

    def drain() -> None:
        with os.fdopen(read_fd, "rb") as out:
            while block := out.read(1 << 20):
                chunks.append(block)

    def log() -> None:
        errors.append(proc.stderr.read())  # type: ignore[union-attr]

    threads = [threading.Thread(target=f, daemon=True) for f in (feed, drain, log)]
    for t in threads:
        t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise FFmpegError(f"ffmpeg timed out after {timeout:g} s") from exc
    finally:
        for t in threads:
            t.join(timeout=10)
    if proc.returncode != 0:
        raise FFmpegError(summarise_log(b"".join(errors)) or f"exit status {proc.returncode}")
    return b"".join(chunks)


RUNNERS: dict[str, Callable[[list[str], bytes, float], bytes]] = {
    "old": old_run_ffmpeg,
    "plain": functools.partial(run_ffmpeg, server=False),
    "new": functools.partial(run_ffmpeg, server=True),
}


@contextlib.contextmanager
def runner(path: str) -> Iterator[None]:
    """Make the ffmpeg codecs run their commands the ``path`` way."""
    saved = codec_module.run_ffmpeg
    codec_module.run_ffmpeg = RUNNERS[path]  # type: ignore[assignment]
    try:
        yield
    finally:
        codec_module.run_ffmpeg = saved  # type: ignore[assignment]


STAT: Callable[[list[float]], float] = statistics.median  # --stat min: the least of the runs


def timed_ms(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Wall time of each ``runs[path]()`` in ms (:data:`STAT` of ``repeats`` runs, after one untimed warm-up each).

    The paths take turns (round robin, the order rotating each round), so that a load that
    comes and goes hits them alike.
    """
    times: dict[str, list[float]] = {path: [] for path in runs}
    for run in runs.values():
        run()
    order = list(runs)
    for k in range(repeats):
        for path in order[k % len(order):] + order[:k % len(order)]:
            start = time.perf_counter()
            runs[path]()
            times[path].append(time.perf_counter() - start)
    return {path: 1000 * STAT(t) for path, t in times.items()}


def through(path: str, run: Callable[[], object]) -> Callable[[], object]:
    """``run`` with the ffmpeg codecs running their commands the ``path`` way."""
    def call() -> object:
        with runner(path):
            return run()
    return call


def load() -> str:
    """Core count and the 1 / 5 / 15-minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.2f} {five:.2f} {fifteen:.2f}"


def breakdown(exe: str, sizes: list[tuple[int, int]], repeats: int) -> None:
    """Where the fixed cost of one command goes, plain process vs fork server (ms)."""
    print("\nwhere a command's time goes (ms; plain process / fork server)")
    print(f"{'step':<44}" + "".join(f"{f'{w}x{h}':>24}" for h, w in sizes))
    colour = ColourConversion()
    rows: dict[str, Callable[[int, int], tuple[list[str], bytes]]] = {
        "ffmpeg start (-version)": lambda h, w: ([exe, "-hide_banner", "-version", "pipe:1"], b""),
        "pipe pass-through rgb24 -> rgb24": lambda h, w: (
            convert_command(exe, "rgb24", h, w, "null", "rgb24"), bytes(h * w * 3)),
        "+ swscale rgb24 -> yuv420p10le (vvc/hevc/av1)": lambda h, w: (
            convert_command(exe, "rgb24", h, w, colour.to_yuv(), "yuv420p10le"), bytes(h * w * 3)),
        "+ swscale yuv420p10le -> rgb24": lambda h, w: (
            convert_command(exe, "yuv420p10le", h, w, colour.to_rgb(), "rgb24"), bytes(h * w * 3 // 2 * 2)),
    }
    for name, build in rows.items():
        cells = []
        for h, w in sizes:
            h, w = h + h % 2, w + w % 2
            command, data = build(h, w)
            ms = timed_ms({r: functools.partial(RUNNERS[r], command, data, 60) for r in ("plain", "new")}, repeats)
            cells.append(f"{ms['plain']:.1f}/{ms['new']:.1f}")
        print(f"{name:<44}" + "".join(f"{c:>24}" for c in cells))


def decoder_rows(exe: str, image: np.ndarray, sizes: list[tuple[int, int]], repeats: int) -> None:
    """Each decoder alone (to its native format) and with the conversion to rgb24 (ms, plain / server)."""
    for label in ("vvc", "hevc", "av1", "jxl", "webp"):
        name, params, quality = CODECS[label]
        codec = get_codec(name, **params)
        if not codec.is_available():
            continue
        assert isinstance(codec, FFmpegCodec)
        cells = []
        for h, w in sizes:
            stream = codec.encode(np.ascontiguousarray(image[:h, :w]), quality)
            payload = stream.data[len(stream.data) - _payload_length(codec, stream.data):]
            full = codec.decode_command(exe)
            native = [*full[:full.index("-vf")], "-frames:v", "1", "-f", "rawvideo", "pipe:1"]
            ms = [timed_ms({r: functools.partial(RUNNERS[r], c, payload, 60) for r in ("plain", "new")}, repeats)
                  for c in (native, full)]
            cells.append(" ".join(f"{m['plain']:.1f}/{m['new']:.1f}" for m in ms))
        print(f"{'decoder ' + label + ' (native; +to rgb24)':<44}" + "".join(f"{c:>24}" for c in cells))


def _payload_length(codec: FFmpegCodec, data: bytes) -> int:
    """Bytes of the coded picture after the adapter's header."""
    from vcm_plugin.codecs.ffmpeg import unpack_size
    from vcm_plugin.varint import ByteReader

    offset = unpack_size(data)[2] if codec.size_header else 0
    if codec.payload_length:
        reader = ByteReader(data, "length", offset)
        reader.varint("length")
        offset = reader.pos
    return len(data) - offset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--sizes", default="32x32,227x227,768x512")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="of the repeats (min: the least, steadier on a busy machine)")
    parser.add_argument("--no-breakdown", action="store_true")
    args = parser.parse_args()
    global STAT
    STAT = min if args.stat == "min" else statistics.median
    sizes = [(int(s.split("x")[1]), int(s.split("x")[0])) for s in args.sizes.split(",")]
    exe = find_ffmpeg()
    if exe is None or get_server(exe) is None:
        raise SystemExit("needs ffmpeg and the fork server (a C compiler, a dynamically linked ffmpeg)")
    image = read_image([p for p in kodak_images() if p.name == "kodim23.png"][0])
    print(f"machine: {load()}; {args.repeats} repeats, {args.stat}; the paths take turns")
    if not args.no_breakdown:
        breakdown(exe, sizes, args.repeats)
        decoder_rows(exe, image, sizes, args.repeats)
    print("\nper picture, ms (old = process per command + polled wait, the runner before; plain = process "
          "per command, VCM_FFMPEG_SERVER=0; new = fork server, the default); the ratios are of encode + decode")
    print(f"{'codec':<15}{'size':>9} | {'enc old':>8}{'plain':>8}{'new':>8} | {'dec old':>8}{'plain':>8}{'new':>8} | "
          f"{'e+d old':>8}{'plain':>8}{'new':>8} | {'plain/new':>9}{'old/new':>8}")
    for label in args.codecs.split(","):
        name, params, quality = CODECS[label]
        codec = get_codec(name, **params)
        if not codec.is_available():
            print(f"{label:<15} not available: {codec.is_available().reason}")
            continue
        for h, w in sizes:
            picture = np.ascontiguousarray(image[:h, :w])
            streams = set()
            for path in ("old", "plain", "new"):
                with runner(path):
                    stream = codec.encode(picture, quality)
                    streams.add((stream.data, codec.decode(stream).tobytes()))
            enc = timed_ms({p: through(p, functools.partial(codec.encode, picture, quality))
                            for p in ("old", "plain", "new")}, args.repeats)
            dec = timed_ms({p: through(p, functools.partial(codec.decode, stream)) for p in ("old", "plain", "new")},
                           args.repeats)
            assert len(streams) == 1, f"{label} {w}x{h}: the paths give different bytes"
            total = {path: enc[path] + dec[path] for path in enc}
            print(f"{label:<15}{f'{w}x{h}':>9} | " + " | ".join(
                "".join(f"{d[p]:8.1f}" for p in ("old", "plain", "new")) for d in (enc, dec, total))
                  + f" | {total['plain'] / total['new']:9.2f}{total['old'] / total['new']:8.2f}", flush=True)
    print(f"\nmachine at the end: {load()}")


if __name__ == "__main__":
    main()
