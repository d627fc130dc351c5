"""FCM-style feature packing: 10-bit quantisation, channel tiling, VVC coding of the frame."""

from __future__ import annotations

import numpy as np
import pytest

from vcm_plugin.errors import DecodeError, EncodeError
from vcm_plugin.features.tiling import Quantised, dequantise, grid, pack, packed_size, quantise, tile, unpack, untile
from vcm_plugin.features.vvc_frames import decode_frame, encode_frame


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.cumsum(rng.normal(size=(10, 8, 8)).astype(np.float32), axis=2)


def test_quantise_tile_round_trip_is_exact_up_to_the_quantiser(features) -> None:
    q = quantise(features)
    assert q.samples.dtype == np.uint16 and q.samples.max() == 1023 and q.samples.min() == 0
    frame = tile(q.samples, 512)
    assert grid(10) == (3, 4) and frame.shape == (24, 32)
    assert (frame[16:, 16:] == 512).all()  # the two unused tiles are mid-grey
    back = dequantise(Quantised(untile(frame, 10, 8, 8), q.low, q.high))
    step = (q.high - q.low) / 1023
    assert np.abs(back - features).max() <= step / 2 + 1e-5


def test_constant_and_bad_tensors() -> None:
    q = quantise(np.full((2, 3, 3), 4.5, np.float32))
    assert (q.samples == 0).all() and (dequantise(q) == 4.5).all()
    with pytest.raises(ValueError, match="non-finite"):
        quantise(np.array([[[np.nan]]], np.float32))
    with pytest.raises(ValueError, match="smaller"):
        untile(np.zeros((4, 4), np.uint16), 10, 8, 8)


def test_vvc_codes_the_frame_with_rate_falling_with_qp(features) -> None:
    frame = tile(quantise(features).samples, 512)
    fine, coarse = encode_frame(frame, 0, preset="faster"), encode_frame(frame, 37, preset="faster")
    assert len(coarse) < len(fine)
    back = decode_frame(fine, *frame.shape)
    assert back.shape == frame.shape and np.abs(back.astype(int) - frame.astype(int)).max() <= 4
    with pytest.raises(DecodeError, match="corrupt or truncated"):
        decode_frame(fine[: len(fine) // 2], *frame.shape)
    with pytest.raises(EncodeError, match="0..1023"):
        encode_frame(np.full((8, 8), 4000, np.uint16), 22)


def test_pack_stacks_every_tensor_into_one_frame_and_back() -> None:
    """The FCM anchor's packing: each tensor's tile grid a block, top to bottom, left-aligned, mid-grey elsewhere."""
    rng = np.random.default_rng(3)
    tensors = [rng.integers(0, 1024, shape, dtype=np.uint16) for shape in ((16, 8, 12), (16, 4, 6), (5, 2, 3))]
    shapes = [t.shape for t in tensors]
    frame = pack(tensors, 512)
    assert frame.shape == packed_size(shapes) == (4 * 8 + 4 * 4 + 2 * 2, 4 * 12)
    assert (frame[32:48, 24:] == 512).all()  # right of the narrower second block
    assert all((a == b).all() for a, b in zip(unpack(frame, shapes), tensors, strict=True))
    with pytest.raises(ValueError, match="is not the 48x52 packing"):
        unpack(frame[:-1], shapes)


def test_global_range_quantisation_clips() -> None:
    q = quantise(np.array([[[-5.0, 0.0, 1.0, 9.0]]]), value_range=(0.0, 1.0))
    assert (q.low, q.high) == (0.0, 1.0) and q.samples.ravel().tolist() == [0, 0, 1023, 1023]


def test_a_small_noisy_frame_at_qp_0_is_coded_on_a_larger_canvas() -> None:
    """10-bit noise at QP 0 needs more than 8 bpp, which overflows ffmpeg's libvvenc output buffer at 64x64:
    the frame is coded on a larger canvas (bits counted) and decoded back to its own size."""
    frame = np.random.default_rng(3).integers(0, 1024, (64, 64)).astype(np.uint16)
    stream = encode_frame(frame, 0, preset="faster")
    assert 8 * len(stream) > 8 * frame.size  # more than 8 bpp: the case that overflowed
    decoded = decode_frame(stream, 64, 64)
    assert decoded.shape == (64, 64) and np.abs(decoded.astype(int) - frame).max() <= 8
