"""The shared base of every ffmpeg-backed codec.

Command building is kept apart from running: :meth:`FFmpegCodec.encode_command` and
:meth:`FFmpegCodec.decode_command` return argument lists that tests inspect, and
:func:`~vcm_plugin.ffmpeg.run_ffmpeg` runs one with the picture on stdin and the result on
a pipe (no temporary files; it and the other ffmpeg helpers live in :mod:`vcm_plugin.ffmpeg`).
The executable is, in order: the codec's ``ffmpeg`` parameter, the ``VCM_FFMPEG``
environment variable, the ffmpeg bundled with ``imageio-ffmpeg``.

Every ffmpeg codec that pads stores the ORIGINAL picture size in a small header in
front of the coded stream (two LEB128 varints, usually 4 bytes), because pictures are
padded by edge replication to what the encoder accepts and cropped after decoding.
The header is part of ``Bitstream.data`` and therefore of the rate. Codecs whose
format codes any size exactly and carries it (JPEG XL, WebP) set
``size_header = False``, which also means no padding: their ``Bitstream.data`` is the plain file.
A codec whose decoder conceals truncation or hangs on trailing bytes sets
``payload_length = True``: the coded stream's length follows (one more varint), and
the adapter rejects a stream of another length before the decoder sees it.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from vcm_plugin.codecs.base import Availability, Bitstream, Codec, Quality
from vcm_plugin.errors import DecodeError, EncodeError
from vcm_plugin.ffmpeg import (
    FFMPEG_ENV,
    FFmpegError,
    ffmpeg_build,
    ffmpeg_decoders,
    ffmpeg_encoders,
    find_ffmpeg,
    library_version,
    pad_edge,
    padded_size,
    raw_input_command,
    run_ffmpeg,
)
from vcm_plugin.varint import ByteReader, encode_varint


# -- the size header ------------------------------------------------------------------
def pack_size(height: int, width: int) -> bytes:
    """The original-size header: width then height as LEB128 varints."""
    return encode_varint(width) + encode_varint(height)


def unpack_size(data: bytes) -> tuple[int, int, int]:
    """Parse :func:`pack_size`; return ``(height, width, payload offset)``."""
    reader = ByteReader(data, "size header")
    width, height = reader.varint("width"), reader.varint("height")
    return height, width, reader.pos


def check_size(codec: str, height: int, width: int, bitstream: Bitstream) -> None:
    """Raise :class:`DecodeError` naming ``codec`` when a size header disagrees with the bitstream's size."""
    if (height, width) != (bitstream.height, bitstream.width):
        raise DecodeError(f"codec {codec!r}: size header says {width}x{height}, "
                          f"bitstream says {bitstream.width}x{bitstream.height}")


@dataclass(frozen=True)
class ColourConversion:
    """RGB <-> Y'CbCr conversion done by swscale (matrix, range, sampling, bit depth)."""

    matrix: str = "bt709"  # bt709, bt601 (alias of smpte170m), bt2020
    range: str = "tv"  # tv (limited) or pc (full)
    pix_fmt: str = "yuv420p10le"

    MATRICES: ClassVar[dict[str, str]] = {"bt709": "bt709", "bt601": "smpte170m", "smpte170m": "smpte170m",
                                          "bt470bg": "bt470bg", "bt2020": "bt2020"}
    RANGES: ClassVar[tuple[str, ...]] = ("tv", "pc")

    def __post_init__(self) -> None:
        if self.matrix not in self.MATRICES:
            raise ValueError(f"colour matrix {self.matrix!r} is not one of {sorted(self.MATRICES)}")
        if self.range not in self.RANGES:
            raise ValueError(f"colour range {self.range!r} is not one of {self.RANGES}")

    def to_yuv(self) -> str:
        """The -vf chain from rgb24 to the coded format."""
        return (f"scale=out_color_matrix={self.MATRICES[self.matrix]}:out_range={self.range}"
                f":flags=accurate_rnd+full_chroma_int,format={self.pix_fmt}")

    def to_rgb(self) -> str:
        """The -vf chain from the decoded format back to rgb24."""
        return (f"scale=in_color_matrix={self.MATRICES[self.matrix]}:in_range={self.range}"
                f":flags=accurate_rnd+full_chroma_int,format=rgb24")


@dataclass
class FFmpegCodec(Codec):
    """An image codec run by ffmpeg: rgb24 in on stdin, one coded picture out on stdout.

    Subclasses name the ffmpeg ``encoder``, ``decoder`` and raw ``container`` format,
    and give :meth:`encoder_args` for a quality, plus the filter chains in and out.
    """

    ffmpeg: str | None = None
    timeout: float = 300.0

    encoder: ClassVar[str]
    decoder: ClassVar[str]
    container: ClassVar[str]
    pad_multiple: ClassVar[int] = 2
    pad_minimum: ClassVar[int] = 64
    # False: no size header and no padding (pad_multiple and pad_minimum are ignored); the
    # coded stream itself carries the exact size (checked against the decoded picture)
    size_header: ClassVar[bool] = True
    # True: the header also holds the coded stream's length (one more varint, 1-3 bytes),
    # for decoders that conceal truncation or hang on trailing bytes: the adapter rejects them
    payload_length: ClassVar[bool] = False
    # >0: when the encoder fails with ``canvas_retry_error`` (libvvenc through ffmpeg has an
    # output buffer of only W*H bytes, so a small picture needing > 8 bpp fails), retry on
    # a canvas twice as large each way, up to this many times. The extra area is edge
    # replication (cheap to code, counted in the rate); the decoder finds the canvas from
    # the decoded picture's size.
    canvas_retries: ClassVar[int] = 0
    canvas_retry_error: ClassVar[str] = "Generic error in an external library"

    # -- subclass hooks ---------------------------------------------------------------
    @abstractmethod
    def encoder_args(self, quality: Quality) -> list[str]:
        """Codec options after ``-c:v ENCODER`` for this quality."""

    def encode_filter(self) -> str | None:
        """The -vf chain applied to the rgb24 input before encoding."""
        return None

    def decode_filter(self) -> str:
        """The -vf chain applied to the decoded picture to get rgb24."""
        return "format=rgb24"

    def demuxer_args(self) -> list[str]:
        """Input options that identify the coded stream for decoding."""
        return ["-f", self.container]

    # -- commands (pure, testable) ----------------------------------------------------
    def executable(self) -> str:
        """The ffmpeg path; raises when none is found."""
        exe = find_ffmpeg(self.ffmpeg)
        if exe is None:
            raise FileNotFoundError(
                f"ffmpeg not found (parameter ffmpeg={self.ffmpeg!r}, ${FFMPEG_ENV}, imageio-ffmpeg)")
        return exe

    def encode_command(self, height: int, width: int, quality: Quality, executable: str = "ffmpeg") -> list[str]:
        """The ffmpeg command line that encodes one rgb24 picture of the padded size."""
        cmd = raw_input_command(executable, "rgb24", height, width)
        vf = self.encode_filter()
        if vf:
            cmd += ["-vf", vf]
        cmd += ["-frames:v", "1", "-c:v", self.encoder, *self.encoder_args(quality), "-f", self.container, "pipe:1"]
        return cmd

    def decode_command(self, executable: str = "ffmpeg") -> list[str]:
        """The ffmpeg command line that decodes one coded picture to rgb24 on stdout."""
        return [executable, "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-err_detect", "explode",
                *self.demuxer_args(), "-c:v", self.decoder, "-i", "pipe:0", "-vf", self.decode_filter(),
                "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]

    # -- the Codec contract -----------------------------------------------------------
    def is_available(self) -> Availability:
        exe = find_ffmpeg(self.ffmpeg)
        if exe is None:
            return Availability(False, f"no ffmpeg found (set {FFMPEG_ENV} or install imageio-ffmpeg)")
        if self.encoder not in ffmpeg_encoders(exe):
            return Availability(False, f"{exe} has no '{self.encoder}' encoder")
        if self.decoder not in ffmpeg_decoders(exe):
            return Availability(False, f"{exe} has no '{self.decoder}' decoder")
        return Availability(True)

    def version(self) -> str:
        """The adapter identity, the ffmpeg build and the versions of the encoder and decoder libraries."""
        exe = find_ffmpeg(self.ffmpeg)
        if exe is None:
            return f"{super().version()} | no ffmpeg"
        libraries = dict.fromkeys(c for c in (self.encoder, self.decoder) if c.startswith("lib"))
        return " | ".join([super().version(), ffmpeg_build(exe),
                           *(f"{c} {library_version(exe, c)}" for c in libraries)])

    def canvases(self, height: int, width: int) -> list[tuple[int, int]]:
        """The coded picture sizes tried, in order: the padded size (unpadded without a size header), then doublings."""
        pad = (self.pad_multiple, self.pad_minimum) if self.size_header else (1, 1)
        ph, pw = padded_size(height, width, *pad)
        return [(ph << i, pw << i) for i in range(self.canvas_retries + 1)]

    def _encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        height, width = image.shape[:2]
        coded, first_error = b"", None
        for ph, pw in self.canvases(height, width):
            padded = np.ascontiguousarray(pad_edge(image, ph, pw))
            try:
                coded = run_ffmpeg(self.encode_command(ph, pw, quality, self.executable()), padded.tobytes(),
                                   self.timeout)
                break
            except FFmpegError as exc:
                first_error = first_error or exc
                if self.canvas_retry_error not in str(exc):
                    break
        if first_error is not None and not coded:
            raise EncodeError(f"codec {self.name!r}: {self.encoder} failed on a {width}x{height} image "
                              f"at {self.quality_range.name} {quality}: {first_error}") from first_error
        if not coded:
            raise EncodeError(f"codec {self.name!r}: {self.encoder} produced an empty stream for a "
                              f"{width}x{height} image at {self.quality_range.name} {quality}")
        header = pack_size(height, width) if self.size_header else b""
        if self.payload_length:
            header += encode_varint(len(coded))
        return self.make_bitstream(header + coded, quality, image)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        height, width, offset = bitstream.height, bitstream.width, 0
        try:
            if self.size_header:
                height, width, offset = unpack_size(bitstream.data)
            if self.payload_length:
                reader = ByteReader(bitstream.data, "payload length header", offset)
                length, offset = reader.varint("payload length"), reader.pos
        except DecodeError as exc:
            raise DecodeError(f"codec {self.name!r}: {exc}") from exc
        check_size(self.name, height, width, bitstream)
        if self.payload_length and len(bitstream.data) - offset != length:
            raise DecodeError(f"codec {self.name!r}: coded picture is {len(bitstream.data) - offset} bytes, "
                              f"the header says {length}: truncated or padded bitstream")
        payload = bitstream.data[offset:]
        if not payload:
            raise DecodeError(f"codec {self.name!r}: bitstream has a header but no coded picture")
        try:
            raw = run_ffmpeg(self.decode_command(self.executable()), payload, self.timeout)
        except FFmpegError as exc:
            raise DecodeError(f"codec {self.name!r}: corrupt or truncated bitstream ({exc})") from exc
        canvases = self.canvases(height, width)
        for ph, pw in canvases:
            if len(raw) == ph * pw * 3:
                return np.frombuffer(raw, np.uint8).reshape(ph, pw, 3)[:height, :width].copy()
        ph, pw = canvases[0]
        raise DecodeError(f"codec {self.name!r}: decoder returned {len(raw)} bytes, expected one "
                          f"{pw}x{ph} picture ({ph * pw * 3} bytes): corrupt or truncated bitstream")
