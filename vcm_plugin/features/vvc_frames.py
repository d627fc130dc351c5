"""One 10-bit monochrome frame (e.g. tiled features) coded as a VVC intra picture by libvvenc.

The frame is the luma of a 4:2:0 10-bit picture whose chroma planes are flat mid-grey
(512): libvvenc takes no 4:0:0 input through ffmpeg, and flat chroma costs a few bytes.
The frame is padded by edge replication to even size and at least 64x64 (as the
``vvc`` image codec does) and the decoder crops it back; the caller carries the frame
size. A frame needing more than 8 bpp (noise at a low QP on a small frame) overflows the
W*H-byte output buffer of ffmpeg's libvvenc wrapper, as for the ``vvc`` codec: it is then
coded on a canvas twice as large each way (edge replication, up to
:data:`CANVAS_RETRIES` times; the extra bits are in the stream, so counted), and the
decoder finds the canvas from the decoded picture's size. Commands are built separately
from running them (:func:`encode_command`, :func:`decode_command`), both through :func:`~vcm_plugin.ffmpeg.run_ffmpeg`.
"""

from __future__ import annotations

import numpy as np

from vcm_plugin.errors import DecodeError, EncodeError
from vcm_plugin.ffmpeg import find_ffmpeg, padded_size, run_ffmpeg

MID_GREY = 512
#: how many times a frame is retried on a canvas twice as large each way (see the module docstring)
CANVAS_RETRIES = 3
_OVERFLOW = "Generic error in an external library"  # what the overflowing libvvenc wrapper reports


def encode_command(executable: str, height: int, width: int, qp: int, preset: str, threads: int) -> list[str]:
    """ffmpeg: raw yuv420p10le of ``width x height`` on stdin -> one VVC intra picture."""
    return [executable, "-hide_banner", "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p10le",
            "-s", f"{width}x{height}", "-r", "1", "-i", "pipe:0", "-frames:v", "1", "-c:v", "libvvenc",
            "-preset", preset, "-qp", str(int(qp)), "-qpa", "0", "-period", "1", "-threads", str(threads),
            "-f", "vvc", "pipe:1"]


def decode_command(executable: str) -> list[str]:
    """ffmpeg: one VVC picture on stdin -> raw yuv420p10le."""
    return [executable, "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-err_detect", "explode",
            "-f", "vvc", "-c:v", "vvc", "-i", "pipe:0", "-frames:v", "1", "-f", "rawvideo",
            "-pix_fmt", "yuv420p10le", "pipe:1"]


def _ffmpeg(explicit: str | None) -> str:
    exe = find_ffmpeg(explicit)
    if exe is None:
        raise EncodeError("no ffmpeg found for VVC frame coding (set VCM_FFMPEG or install imageio-ffmpeg)")
    return exe


def encode_frame(frame: np.ndarray, qp: int, preset: str = "medium", threads: int = 1,
                 ffmpeg: str | None = None, timeout: float = 300.0) -> bytes:
    """Code a (H, W) array of 10-bit samples (0..1023); returns the raw VVC stream."""
    frame = np.asarray(frame)
    if frame.ndim != 2 or frame.size == 0 or frame.max(initial=0) > 1023:
        raise EncodeError(f"VVC frame coding needs a non-empty (H, W) array of 0..1023, got {frame.shape}")
    ph, pw = padded_size(frame.shape[0], frame.shape[1], 2, 64)
    for retry in range(CANVAS_RETRIES + 1):
        ch, cw = ph << retry, pw << retry
        luma = np.pad(frame.astype(np.uint16), ((0, ch - frame.shape[0]), (0, cw - frame.shape[1])), mode="edge")
        chroma = np.full((ch // 2) * (cw // 2) * 2, MID_GREY, np.uint16)
        raw = luma.astype("<u2").tobytes() + chroma.astype("<u2").tobytes()
        try:
            return run_ffmpeg(encode_command(_ffmpeg(ffmpeg), ch, cw, qp, preset, threads), raw, timeout)
        except Exception as exc:
            if _OVERFLOW in str(exc) and retry < CANVAS_RETRIES:
                continue
            raise EncodeError(f"VVC frame coding of a {frame.shape[1]}x{frame.shape[0]} frame at QP {qp} (canvas "
                              f"{cw}x{ch}): {exc}") from exc
    raise AssertionError("unreachable")


def decode_frame(data: bytes, height: int, width: int, ffmpeg: str | None = None, timeout: float = 300.0) -> np.ndarray:
    """Decode :func:`encode_frame`'s stream to the (height, width) uint16 frame."""
    ph, pw = padded_size(height, width, 2, 64)
    try:
        raw = run_ffmpeg(decode_command(_ffmpeg(ffmpeg)), bytes(data), timeout)
    except Exception as exc:
        raise DecodeError(f"VVC frame decoding failed (corrupt or truncated stream): {exc}") from exc
    for retry in range(CANVAS_RETRIES + 1):  # the canvas the encoder used (see the module docstring)
        ch, cw = ph << retry, pw << retry
        if len(raw) == ch * cw * 3:  # 4:2:0, 2 bytes per sample
            luma = np.frombuffer(raw[:ch * cw * 2], "<u2").reshape(ch, cw)
            return luma[:height, :width].astype(np.uint16)
    raise DecodeError(f"VVC frame decoding gave {len(raw)} bytes, expected {ph * pw * 3} for a {pw}x{ph} picture "
                      f"(or a canvas up to {2 ** CANVAS_RETRIES} times as large each way)")
