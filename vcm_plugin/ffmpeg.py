"""Running ffmpeg through pipes: the executable lookup, its components and versions, padding.

:func:`run_ffmpeg` runs a command with the picture on stdin and the result on a private
pipe (no temporary files). The executable (:func:`find_ffmpeg`) is, in order: an explicit
name or path, the ``VCM_FFMPEG`` environment variable, the ffmpeg bundled with
``imageio-ffmpeg``. The ffmpeg codecs (:mod:`vcm_plugin.codecs.ffmpeg`), the image resizer
and the feature-frame packing all use them, so they sit at the bottom of the layers and
import nothing from vcm_plugin but the ffmpeg fork server (:mod:`vcm_plugin.ffmpeg_server`),
through which :func:`run_ffmpeg` runs commands where it can (the same output, without
the process start-up).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import subprocess
import threading
import time

import numpy as np

from vcm_plugin.ffmpeg_server import OUTPUT_FD, FFmpegServer, ServedProcess, ServerError, get_server

FFMPEG_ENV = "VCM_FFMPEG"
log = logging.getLogger(__name__)


def find_ffmpeg(explicit: str | None = None) -> str | None:
    """Path of the ffmpeg to use, or ``None`` when none is found."""
    candidate = explicit or os.environ.get(FFMPEG_ENV)
    if candidate:
        return shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or no binary for this platform
        return shutil.which("ffmpeg")


@functools.lru_cache(maxsize=32)
def _list_components(executable: str, kind: str) -> frozenset[str]:
    try:
        out = subprocess.run([executable, "-hide_banner", f"-{kind}"], capture_output=True,
                             timeout=30, check=False).stdout.decode("utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    # lines look like " V....D libvvenc   libvvenc H.266 / VVC (codec vvc)"
    return frozenset(m.group(1) for m in re.finditer(r"^\s*[VAS][A-Z.]{5}\s+(\S+)", out, re.MULTILINE))


def ffmpeg_encoders(executable: str) -> frozenset[str]:
    """Names of the encoders compiled into ``executable``."""
    return _list_components(executable, "encoders")


def ffmpeg_decoders(executable: str) -> frozenset[str]:
    """Names of the decoders compiled into ``executable``."""
    return _list_components(executable, "decoders")


#: how encoder libraries name their version in a verbose ffmpeg log (group 1: the version)
ENCODER_BANNERS: dict[str, str] = {
    "libvvenc": r"libvvenc version: (\S+)",
    "libx265": r"HEVC encoder version (\S+)",
    "libaom-av1": r"\[libaom-av1 @ [^\]]*\] (v\d\S*)",
    "libsvtav1": r"SVT-AV1 Encoder Lib (\S+)",
}
# shared-library name of components whose ffmpeg name differs from it
_SHARED_LIBRARY = {"libaom-av1": "libaom", "libsvtav1": "libSvtAv1Enc"}


@functools.lru_cache(maxsize=8)
def ffmpeg_build(executable: str) -> str:
    """The first line of ``ffmpeg -version`` without the copyright (e.g. ``ffmpeg version n7.1-...``)."""
    try:
        out = subprocess.run([executable, "-hide_banner", "-version"], capture_output=True, timeout=30,
                             check=False).stdout.decode("utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ffmpeg {executable} (version unknown: {type(exc).__name__})"
    first = out.strip().splitlines()[0] if out.strip() else f"ffmpeg {executable} (version unknown)"
    return first.split(" Copyright")[0].strip()


@functools.lru_cache(maxsize=8)
def _linked_libraries(executable: str) -> dict[str, str]:
    """soname -> resolved file name of each shared library ``executable`` loads (empty: static or unknown)."""
    try:
        out = subprocess.run(["ldd", executable], capture_output=True, timeout=30,
                             check=False).stdout.decode("utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {m.group(1): os.path.basename(os.path.realpath(m.group(2)))
            for m in re.finditer(r"^\s*(\S+)\s+=>\s+(/\S+)", out, re.MULTILINE)}


@functools.lru_cache(maxsize=32)
def library_version(executable: str, component: str) -> str:
    """The version of the external library behind an ffmpeg encoder or decoder (cached per process).

    The version the encoder prints in a one-frame 64x64 probe at ``-v verbose`` (those of
    :data:`ENCODER_BANNERS`); else the resolved file name of its shared library when
    ffmpeg is linked dynamically (e.g. ``libwebp.so.7.1.9``); else ``"static"``: linked into
    the binary, whose :func:`ffmpeg_build` string then identifies it.
    """
    pattern = ENCODER_BANNERS.get(component)
    if pattern is not None and component in ffmpeg_encoders(executable):
        probe = [executable, "-hide_banner", "-nostdin", "-v", "verbose", "-f", "lavfi", "-i",
                 "color=c=gray:s=64x64:d=1", "-frames:v", "1", "-c:v", component, "-f", "null", "-"]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=60, check=False)
            found = re.search(pattern, (done.stderr + done.stdout).decode("utf-8", errors="replace"))
        except (OSError, subprocess.TimeoutExpired):
            found = None
        if found:
            return found.group(1)
    soname = _SHARED_LIBRARY.get(component, component) + ".so"
    linked = [resolved for name, resolved in _linked_libraries(executable).items() if name.startswith(soname)]
    return ",".join(sorted(linked)) or "static"


#: The ffmpeg components the built-in codecs use, as (kind, name): vvc, hevc, av1 (either encoder), jxl, webp.
CODEC_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("encoder", "libvvenc"), ("decoder", "vvc"), ("encoder", "libx265"), ("decoder", "hevc"),
    ("encoder", "libaom-av1"), ("encoder", "libsvtav1"), ("decoder", "libdav1d"),
    ("encoder", "libjxl"), ("decoder", "libjxl"), ("encoder", "libwebp"), ("decoder", "webp"))


def component_versions(executable: str,
                       components: tuple[tuple[str, str], ...] = CODEC_COMPONENTS) -> dict[tuple[str, str], str | None]:
    """(kind, name) -> the library version behind each ffmpeg encoder / decoder of ``components``
    (:func:`library_version`; ``"built-in"`` for ffmpeg's own decoders), ``None`` where ``executable`` lacks it."""
    found: dict[tuple[str, str], str | None] = {}
    for kind, name in components:
        present = name in (ffmpeg_encoders(executable) if kind == "encoder" else ffmpeg_decoders(executable))
        found[(kind, name)] = (library_version(executable, name) if name.startswith("lib") else "built-in") \
            if present else None
    return found


def raw_input_command(executable: str, pix_fmt: str, height: int, width: int) -> list[str]:
    """The start of a quiet ffmpeg command reading one raw ``pix_fmt`` picture of ``width`` x ``height`` on stdin."""
    return [executable, "-hide_banner", "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", pix_fmt,
            "-s", f"{width}x{height}", "-r", "1", "-i", "pipe:0"]


def convert_command(executable: str, pix_fmt: str, height: int, width: int, vf: str, out_pix_fmt: str) -> list[str]:
    """The ffmpeg command putting one raw picture on stdin through the filter chain ``vf`` to raw ``out_pix_fmt``
    on ``pipe:1`` (for :func:`run_ffmpeg`)."""
    return [*raw_input_command(executable, pix_fmt, height, width), "-vf", vf, "-frames:v", "1",
            "-f", "rawvideo", "-pix_fmt", out_pix_fmt, "pipe:1"]


class FFmpegError(RuntimeError):
    """ffmpeg exited non-zero or timed out; the message holds the end of its log."""


def run_ffmpeg(command: list[str], stdin: bytes, timeout: float, server: bool | None = None) -> bytes:
    """Run an ffmpeg command whose last argument is ``pipe:1``; return what it writes there.

    The coded or decoded picture travels on a private pipe (fd 3 or above), not on
    stdout: some encoder libraries print warnings to stdout (libvvenc prints its
    configuration warnings there), which would silently end up inside the bitstream.
    ``timeout`` is in seconds. ``server``: run the command through this process's ffmpeg
    fork server (:mod:`vcm_plugin.ffmpeg_server`: the same command and output without the
    ~10 ms of process start-up); ``None`` (default) uses it where it works, unless
    ``$VCM_FFMPEG_SERVER`` is 0; ``False`` always starts a plain process.
    """
    if not command or command[-1] != "pipe:1":
        raise ValueError("an ffmpeg command for run_ffmpeg must end with the output 'pipe:1'")
    forked = get_server(command[0]) if server is not False else None
    if server and forked is None:
        raise FFmpegError(f"the ffmpeg fork server cannot run {command[0]} here")
    deadline = time.monotonic() + timeout
    if forked is not None:
        try:
            return _collect(*_start(command, forked, timeout), stdin, deadline, timeout)
        except ServerError as exc:  # the server could not start the command (it did not run): a plain process
            if server:
                raise FFmpegError(f"cannot start {command[0]}: {exc}") from exc
            log.info("%s; this command runs as a plain process", exc)
            deadline = time.monotonic() + timeout  # it did not run: it gets its whole time
    return _collect(*_start(command, None, timeout), stdin, deadline, timeout)


def _start(command: list[str], forked: FFmpegServer | None,
           timeout: float) -> tuple[subprocess.Popen[bytes] | ServedProcess, int, int, int]:
    """Start ``command`` through ``forked`` or as a plain process: (process, stdin write end, output and log read ends).

    Raises :class:`ServerError` when the server could not start it, :class:`FFmpegError` when a plain process cannot
    start.
    """
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        if forked is not None:
            proc: subprocess.Popen[bytes] | ServedProcess = forked.launch(
                [*command[:-1], f"pipe:{OUTPUT_FD}"], in_read, out_write, err_write, timeout)
        else:
            proc = subprocess.Popen([*command[:-1], f"pipe:{out_write}"], stdin=in_read, stdout=subprocess.DEVNULL,
                                    stderr=err_write, pass_fds=(out_write,))
    except (OSError, ServerError) as exc:
        for fd in (in_write, out_read, err_read):
            os.close(fd)
        if isinstance(exc, ServerError):
            raise
        raise FFmpegError(f"cannot start {command[0]}: {exc}") from exc
    finally:
        for fd in (in_read, out_write, err_write):
            os.close(fd)
    return proc, in_write, out_read, err_read


def _collect(proc: subprocess.Popen[bytes] | ServedProcess, in_write: int, out_read: int, err_read: int,
             stdin: bytes, deadline: float, timeout: float) -> bytes:
    """Feed ``stdin``, read the output and the log until ffmpeg exits (or ``deadline``, time.monotonic s)."""
    chunks: list[bytes] = []
    errors: list[bytes] = []

    def feed() -> None:
        pipe = open(in_write, "wb", closefd=True)  # closed below whatever happens
        try:
            pipe.write(stdin)
        except OSError:
            pass  # ffmpeg stopped reading: its exit status and log say why
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    def drain(fd: int, into: list[bytes]) -> None:
        with open(fd, "rb", closefd=True) as pipe:
            while block := pipe.read(1 << 20):
                into.append(block)

    threads = [threading.Thread(target=feed, daemon=True),
               threading.Thread(target=drain, args=(out_read, chunks), daemon=True),
               threading.Thread(target=drain, args=(err_read, errors), daemon=True)]
    for t in threads:
        t.start()
    try:
        if isinstance(proc, ServedProcess):  # its exit status arrives on a socket: no polling, and a dead helper
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))  # is seen at once (ffmpeg is then killed)
        # both output pipes close when ffmpeg exits: waiting on them wakes at once (Popen.wait with a
        # time limit polls with growing sleeps, which added up to ~30 ms per command)
        for t in threads[1:]:
            t.join(max(deadline - time.monotonic(), 0.0))
        proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, ServerError):
            proc.wait(timeout=10)
        raise FFmpegError(f"ffmpeg timed out after {timeout:g} s (a codec's `timeout` parameter, in seconds, "
                           f"raises the limit)") from exc
    except ServerError as exc:
        raise FFmpegError(f"{exc}") from exc
    finally:
        for t in threads:
            t.join(timeout=10)
    if proc.returncode != 0:
        raise FFmpegError(summarise_log(b"".join(errors)) or f"exit status {proc.returncode}")
    return b"".join(chunks)


# banners and notices that encoder libraries print on stderr whatever ffmpeg's -v says
_LIBRARY_CHATTER = re.compile(r"^Svt\[(info|warn)\]")


def summarise_log(log: bytes, keep: int = 3) -> str:
    """The first distinct lines of an ffmpeg log (the cause comes first), without addresses."""
    lines: list[str] = []
    for line in log.decode("utf-8", errors="replace").splitlines():
        line = re.sub(r"\[([^\]@]+?) @ 0x[0-9a-f]+\]", r"[\1]", line).strip()
        if _LIBRARY_CHATTER.match(line):
            continue
        if line and line not in lines:
            lines.append(line)
    return " | ".join(lines[:keep])


# -- padding --------------------------------------------------------------------------
def padded_size(height: int, width: int, multiple: int, minimum: int) -> tuple[int, int]:
    """Size after padding to a multiple of ``multiple`` and at least ``minimum``."""

    def up(n: int) -> int:
        return max(minimum, -(-n // multiple) * multiple)

    return up(height), up(width)


def pad_edge(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad an (H, W, C) image at the bottom and right by edge replication."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    return np.pad(image, ((0, height - h), (0, width - w), (0, 0)), mode="edge")
