"""VVC intra coding with the MPEG/JVET reference software VTM (EncoderApp / DecoderApp).

VTM is not shipped with vcm-plugin and is never downloaded or built by it: the user
supplies the two executables and an encoder configuration file (normally VTM's
``cfg/encoder_intra_vtm.cfg``), through the codec parameters ``encoder=``,
``decoder=``, ``config=`` or the environment variables ``VTM_ENCODER``,
``VTM_DECODER``, ``VTM_CONFIG``. Without them the codec is listed as unavailable,
with the reason.

The picture goes through the same path as the embedded ``vvc`` anchor, so the two are
comparable: padded by edge replication to even size and at least 64x64, converted
from RGB to Y'CbCr 4:2:0 at 10 bits by swscale (BT.709 limited range by default,
parameters ``matrix`` and ``range``), written to a raw ``yuv420p10le`` file, coded
as one intra picture at a fixed QP (``--ConformanceWindowMode=1`` lets VTM pad
further to its minimum CU size and signal a conformance window), decoded with
``DecoderApp -d 10`` and cropped back to the original size. Everything happens in a
temporary directory that is removed afterwards, on success or error.

**Rate:** ``Bitstream.data`` is the 2-4 byte original-size header
(:func:`~vcm_plugin.codecs.ffmpeg.pack_size`) followed by the VTM ``.bin`` file
byte for byte; ``num_bits`` counts both, exactly as for ``vvc``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from vcm_plugin.codecs.base import Availability, Bitstream, Codec, Quality, QualityRange
from vcm_plugin.codecs.ffmpeg import ColourConversion, check_size, pack_size, unpack_size
from vcm_plugin.codecs.registry import register_codec
from vcm_plugin.codecs.yuv import YUV_PIX_FMT, read_yuv_file, write_yuv_file, yuv420_frame_bytes
from vcm_plugin.errors import CodecUnavailableError, DecodeError, EncodeError
from vcm_plugin.ffmpeg import FFMPEG_ENV, FFmpegError, find_ffmpeg, pad_edge, padded_size

ENCODER_ENV = "VTM_ENCODER"
DECODER_ENV = "VTM_DECODER"
CONFIG_ENV = "VTM_CONFIG"
#: codec parameter -> (environment variable it falls back to, what it names)
_SETTINGS = {"encoder": (ENCODER_ENV, "VTM EncoderApp"), "decoder": (DECODER_ENV, "VTM DecoderApp"),
             "config": (CONFIG_ENV, "VTM encoder config")}

BIT_DEPTH = 10
CHROMA_FORMAT = "420"
_LOG_LINES = 5  # lines of a failing program's log quoted in the error


class _ProgramFailed(Exception):
    """An external program exited non-zero, timed out or could not start."""


def _log_tail(path: Path) -> str:
    try:
        text = path.read_bytes()[-8192:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-_LOG_LINES:])


def _run_program(command: list[str], log: Path, timeout: float, cwd: Path) -> None:
    """Run ``command`` with stdout and stderr to ``log``; kill it (and its group) after ``timeout`` s."""
    with open(log, "wb") as log_file:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    cwd=cwd, start_new_session=(os.name == "posix"))
        except OSError as exc:
            raise _ProgramFailed(f"cannot start {command[0]}: {exc}") from exc
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                if os.name == "posix":
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            proc.wait()
            raise _ProgramFailed(f"{command[0]} timed out after {timeout:g} s and was stopped") from None
    if returncode != 0:
        tail = _log_tail(log)
        raise _ProgramFailed(f"{command[0]} exited with status {returncode}" + (f": {tail}" if tail else ""))


@register_codec
@dataclass
class VTMCodec(Codec):
    """VVC intra picture by the VTM reference software (QP 0..63, lower QP = more bits).

    ``encoder``, ``decoder``: paths (or names on ``PATH``) of EncoderApp and
    DecoderApp; ``config``: the encoder cfg file; each falls back to its environment
    variable. ``extra_args`` are appended to the encoder command line (e.g.
    ``["--Level=6.2"]``). ``timeout`` is per program run, in seconds.
    """

    name: ClassVar[str] = "vtm"
    quality_range: ClassVar[QualityRange] = QualityRange(
        "qp", 0, 63, higher_is_more_bits=False, description="VVC quantisation parameter (VTM -q)")
    pad_multiple: ClassVar[int] = 2
    pad_minimum: ClassVar[int] = 64

    encoder: str | None = None
    decoder: str | None = None
    config: str | None = None
    matrix: str = "bt709"
    range: str = "tv"
    extra_args: list[str] = field(default_factory=list)
    ffmpeg: str | None = None
    timeout: float = 3600.0

    def __post_init__(self) -> None:
        self._colour = ColourConversion(self.matrix, self.range, YUV_PIX_FMT)
        if self.timeout <= 0:
            raise ValueError(f"vtm timeout must be positive seconds, got {self.timeout!r}")
        self.extra_args = [str(a) for a in self.extra_args]

    # -- configuration ----------------------------------------------------------------
    def _setting(self, param: str) -> str | None:
        return getattr(self, param) or os.environ.get(_SETTINGS[param][0]) or None

    def _problem(self, param: str) -> str | None:
        """Why the setting ``param`` cannot be used (not configured, no such program or file), or None."""
        env, what = _SETTINGS[param]
        value = self._setting(param)
        source = f"parameter {param}=" if getattr(self, param) else f"${env}"
        if value is None:
            example = " (e.g. VTM's cfg/encoder_intra_vtm.cfg)" if param == "config" else ""
            return f"{what} not configured: set {env} or the codec parameter {param}={example}"
        if param == "config":
            return None if os.path.isfile(value) else f"{what} {value!r} (from {source}) is not a file"
        return None if shutil.which(value) else f"{what} {value!r} (from {source}) not found or not executable"

    def _configured(self, param: str) -> str:
        value = self._setting(param)
        if value is None:
            raise CodecUnavailableError(f"codec {self.name!r}: {self._problem(param)}")
        return value

    def encoder_path(self) -> str:
        """The EncoderApp as configured (parameter, else ``$VTM_ENCODER``)."""
        return self._configured("encoder")

    def decoder_path(self) -> str:
        """The DecoderApp as configured (parameter, else ``$VTM_DECODER``)."""
        return self._configured("decoder")

    def config_path(self) -> str:
        """The encoder cfg file as configured (parameter, else ``$VTM_CONFIG``)."""
        return self._configured("config")

    # -- commands (pure, testable) ----------------------------------------------------
    def encoder_command(self, yuv_in: str | os.PathLike[str], bitstream_out: str | os.PathLike[str],
                        width: int, height: int, qp: int, recon: str | os.PathLike[str] = os.devnull) -> list[str]:
        """The EncoderApp command coding one 10-bit 4:2:0 picture of ``width`` x ``height`` pixels at ``qp``."""
        return [self.encoder_path(), "-c", self.config_path(), "-i", str(yuv_in), "-b", str(bitstream_out),
                "-o", str(recon), "-wdt", str(int(width)), "-hgt", str(int(height)), "-q", str(int(qp)),
                "-f", "1", "-fr", "1", "--TemporalSubsampleRatio=1",
                f"--InputBitDepth={BIT_DEPTH}", f"--InternalBitDepth={BIT_DEPTH}", f"--OutputBitDepth={BIT_DEPTH}",
                f"--InputChromaFormat={CHROMA_FORMAT}", "--ConformanceWindowMode=1", *self.extra_args]

    def decoder_command(self, bitstream_in: str | os.PathLike[str], yuv_out: str | os.PathLike[str]) -> list[str]:
        """The DecoderApp command writing the decoded picture as 10-bit raw YUV."""
        return [self.decoder_path(), "-b", str(bitstream_in), "-o", str(yuv_out), "-d", str(BIT_DEPTH)]

    def ffmpeg_path(self) -> str:
        """The ffmpeg used for the colour conversion; raises when none is found."""
        exe = find_ffmpeg(self.ffmpeg)
        if exe is None:
            raise CodecUnavailableError(f"codec {self.name!r}: no ffmpeg for the colour conversion "
                                        f"(parameter ffmpeg={self.ffmpeg!r}, ${FFMPEG_ENV}, imageio-ffmpeg)")
        return exe

    def version(self) -> str:
        """The adapter version plus the resolved EncoderApp/DecoderApp paths and the cfg's SHA-256 prefix.

        Paths set through environment variables are not in :meth:`params`, so they are
        named here to keep results of different VTM builds or cfgs apart. Runs nothing.
        """
        parts = [super().version()]
        for param in ("encoder", "decoder"):
            value = self._setting(param)
            parts.append(f"{param}={(shutil.which(value) or value) if value else '-'}")
        cfg = self._setting("config")
        try:
            digest = hashlib.sha256(Path(cfg).read_bytes()).hexdigest()[:16] if cfg else "-"
        except OSError:
            digest = "unreadable"
        parts.append(f"config={cfg or '-'} sha256:{digest}")
        return " ".join(parts)

    # -- availability -----------------------------------------------------------------
    def is_available(self) -> Availability:
        problems = [problem for problem in map(self._problem, _SETTINGS) if problem]
        if find_ffmpeg(self.ffmpeg) is None:
            problems.append(f"no ffmpeg for the colour conversion (set {FFMPEG_ENV} or install imageio-ffmpeg)")
        return Availability(not problems, "; ".join(problems))

    # -- the Codec contract -----------------------------------------------------------
    def _encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        height, width = image.shape[:2]
        ph, pw = padded_size(height, width, self.pad_multiple, self.pad_minimum)
        what = f"a {width}x{height} image at qp {quality}"
        ffmpeg = self.ffmpeg_path()
        with tempfile.TemporaryDirectory(prefix="vcm-vtm-") as tmp:
            work = Path(tmp)
            yuv_in, bitstream_out = work / "input.yuv", work / "bitstream.bin"
            try:
                write_yuv_file(pad_edge(image, ph, pw), yuv_in, self._colour, ffmpeg, self.timeout)
            except (FFmpegError, ValueError) as exc:
                raise EncodeError(f"codec {self.name!r}: RGB to YUV conversion of {what} failed: {exc}") from exc
            command = self.encoder_command(yuv_in, bitstream_out, pw, ph, int(quality))
            try:
                _run_program(command, work / "encoder.log", self.timeout, work)
            except _ProgramFailed as exc:
                raise EncodeError(f"codec {self.name!r}: EncoderApp failed on {what}: {exc}") from exc
            coded = bitstream_out.read_bytes() if bitstream_out.is_file() else b""
        if not coded:
            raise EncodeError(f"codec {self.name!r}: EncoderApp {command[0]} wrote no bitstream for {what}")
        return self.make_bitstream(pack_size(height, width) + coded, quality, image)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        height, width, offset = unpack_size(bitstream.data)
        check_size(self.name, height, width, bitstream)
        payload = bitstream.data[offset:]
        if not payload:
            raise DecodeError(f"codec {self.name!r}: bitstream has a size header but no coded picture")
        ph, pw = padded_size(height, width, self.pad_multiple, self.pad_minimum)
        expected = yuv420_frame_bytes(ph, pw)
        ffmpeg = self.ffmpeg_path()
        with tempfile.TemporaryDirectory(prefix="vcm-vtm-") as tmp:
            work = Path(tmp)
            bitstream_in, yuv_out = work / "bitstream.bin", work / "decoded.yuv"
            bitstream_in.write_bytes(payload)
            command = self.decoder_command(bitstream_in, yuv_out)
            try:
                _run_program(command, work / "decoder.log", self.timeout, work)
            except _ProgramFailed as exc:
                raise DecodeError(f"codec {self.name!r}: DecoderApp failed, corrupt or truncated bitstream? "
                                  f"({exc})") from exc
            size = yuv_out.stat().st_size if yuv_out.is_file() else 0
            if size != expected:
                raise DecodeError(f"codec {self.name!r}: DecoderApp {command[0]} wrote {size} bytes of YUV, "
                                  f"expected one {pw}x{ph} 10-bit 4:2:0 picture ({expected} bytes)")
            try:
                rgb = read_yuv_file(yuv_out, ph, pw, self._colour, ffmpeg, self.timeout)
            except (FFmpegError, ValueError) as exc:
                raise DecodeError(f"codec {self.name!r}: YUV to RGB conversion failed: {exc}") from exc
        return rgb[:height, :width].copy()
