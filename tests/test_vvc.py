"""VVC specifics: the exact command, the anchor figures of ENVIRONMENT.md, the canvas retry."""

from __future__ import annotations

import numpy as np
import pytest

from vcm_plugin import get_codec
from vcm_plugin.images.metrics import psnr_y


def test_encode_command_is_the_documented_anchor() -> None:
    cmd = get_codec("vvc").encode_command(512, 768, 32, "ffmpeg")
    joined = " ".join(cmd)
    assert "-s 768x512" in joined
    assert ("scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd+full_chroma_int,format=yuv420p10le"
            in joined)
    assert "-c:v libvvenc -preset medium -qp 32 -qpa 0" in joined
    assert cmd[-3:] == ["-f", "vvc", "pipe:1"]
    bt601 = " ".join(get_codec("vvc", matrix="bt601", range="pc").encode_command(64, 64, 32, "ffmpeg"))
    assert "out_color_matrix=smpte170m:out_range=pc" in bt601


def test_canvas_retry_codes_a_picture_needing_more_than_8_bpp() -> None:
    # 64x64 colour noise at QP 0 overflows ffmpeg's W*H-byte libvvenc output buffer
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    codec = get_codec("vvc", preset="faster")
    bitstream = codec.encode(noise, 0)
    assert bitstream.bpp > 8.0  # needed more than the wrapper's buffer: coded on a larger canvas
    assert codec.canvases(64, 64)[:2] == [(64, 64), (128, 128)]
    decoded = codec.decode(bitstream)
    assert decoded.shape == noise.shape


def test_grey_noise_is_near_lossless_at_qp0() -> None:
    grey = np.repeat(np.random.default_rng(4).integers(0, 256, (40, 40, 1), dtype=np.uint8), 3, axis=2)
    codec = get_codec("vvc", preset="faster")
    assert psnr_y(grey, codec.decode(codec.encode(grey, 0))) > 50.0


@pytest.mark.slow
def test_kodim23_matches_the_environment_table(kodim23) -> None:
    """ENVIRONMENT.md: medium, QP 32: 11,026 bytes, PSNR-Y 39.09 dB (file input, no VUI).

    Ours adds the 4-byte size header and libvvenc's 7-byte colour description (VUI).
    """
    codec = get_codec("vvc")
    bitstream = codec.encode(kodim23, 32)
    assert len(bitstream.data) == 11026 + 4 + 7
    assert psnr_y(kodim23, codec.decode(bitstream)) == pytest.approx(39.09, abs=0.01)
