"""The codec contract, checked on every built-in codec that runs here.

Each codec must round-trip real content at its exact size, report an honest rate,
code tiny and odd sizes, and turn corrupt or truncated streams into a DecodeError
that names it (never a hang, an interpreter crash or a silently wrong picture).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vcm_plugin import (
    Bitstream,
    DecodeError,
    InvalidImageError,
    QualityError,
    UnknownCodecError,
    available_codecs,
    get_codec,
)
from vcm_plugin.codecs.base import Codec
from vcm_plugin.conformance.codec import corrupt_variants
from vcm_plugin.images.metrics import psnr_rgb

# every codec the package registers, available here or not: the unavailable ones and the feature
# codecs (coded at a task model's cut point, tests/test_task_codecs.py) are recorded skips with the reason
REGISTERED = {c.name: c for c in available_codecs(include_unavailable=True) if c.origin.startswith("vcm_plugin.")}
BUILTIN = [name for name, c in REGISTERED.items() if c.availability and c.output_point == "input"]  # image codecs
FAST_PARAMS = {"vvc": {"preset": "faster"}, "hevc": {"preset": "ultrafast"}}
# learned codecs trained at a few fixed lambdas have no near-lossless setting
NO_NEAR_LOSSLESS = {"compressai"}


def build(name: str) -> Codec:
    try:
        return get_codec(name, **FAST_PARAMS.get(name, {}))
    except Exception:  # a codec without that parameter
        return get_codec(name)


def mid_quality(codec: Codec):
    r = codec.quality_range
    mid = (r.minimum + r.maximum) / 2
    return int(mid) if r.integer else mid


def max_rate_quality(codec: Codec):
    r = codec.quality_range
    return r.maximum if r.higher_is_more_bits else r.minimum


def test_builtin_codecs_are_available_here() -> None:
    assert {"jpeg", "vvc"} <= set(BUILTIN)


def test_every_registered_codec_is_checked_or_skipped_with_a_reason() -> None:
    assert {"jpeg", "vvc", "hevc", "av1", "jxl", "webp", "compressai", "vtm"} <= set(REGISTERED)
    for info in REGISTERED.values():
        assert info.availability or info.availability.reason, info.name


@pytest.fixture(scope="module", params=sorted(REGISTERED))
def coded(request, small_crop):
    info = REGISTERED[request.param]
    if not info.availability:
        pytest.skip(f"codec {info.name!r} is not available here: {info.availability.reason}")
    if info.output_point != "input":
        pytest.skip(f"codec {info.name!r} codes features at {info.output_point}, not images (its contract is "
                    "tested in tests/test_task_codecs.py and tests/test_feature_codec.py)")
    codec = build(request.param)
    return codec, codec.encode(small_crop, mid_quality(codec))


def test_round_trip_is_exact_size_and_sensible(coded, small_crop) -> None:
    codec, bitstream = coded
    decoded = codec.decode(bitstream)
    assert decoded.shape == small_crop.shape and decoded.dtype == np.uint8
    assert psnr_rgb(small_crop, decoded) > 22.0, codec.name
    assert bitstream.codec == codec.name
    assert bitstream.bpp == 8 * len(bitstream.data) / (small_crop.shape[0] * small_crop.shape[1])


def test_corrupt_and_truncated_streams_raise_decode_error(coded) -> None:
    codec, bitstream = coded
    for label, data in corrupt_variants(bitstream.data, header=4).items():
        with pytest.raises(DecodeError) as info:
            codec.decode(dataclasses.replace(bitstream, data=data))
        assert codec.name in str(info.value), label


def test_empty_and_foreign_streams_are_refused(coded) -> None:
    codec, bitstream = coded
    with pytest.raises(DecodeError, match="empty"):
        codec.decode(dataclasses.replace(bitstream, data=b""))
    with pytest.raises(DecodeError, match="made by codec 'other'"):
        codec.decode(dataclasses.replace(bitstream, codec="other"))


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (5, 3), (2, 64), (1001, 1)])
def test_tiny_and_odd_sizes(coded, shape) -> None:
    codec, _ = coded
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    bitstream = codec.encode(image, mid_quality(codec))
    assert (bitstream.height, bitstream.width) == shape
    assert codec.decode(bitstream).shape == (*shape, 3)


def test_noise_at_the_highest_rate(coded) -> None:
    codec, _ = coded
    if codec.name in NO_NEAR_LOSSLESS:
        pytest.skip(f"{codec.name}: trained at fixed rate-distortion trade-offs, no near-lossless quality")
    # grey noise: 4:2:0 chroma subsampling of colour noise would dominate the error
    noise = np.repeat(np.random.default_rng(2).integers(0, 256, (8, 8, 1), dtype=np.uint8), 3, axis=2)
    bitstream = codec.encode(noise, max_rate_quality(codec))
    decoded = codec.decode(bitstream)
    assert decoded.shape == noise.shape
    assert psnr_rgb(noise, decoded) > 35.0  # the highest rate is near-lossless


def test_quality_out_of_range(coded, small_crop) -> None:
    codec, _ = coded
    r = codec.quality_range
    for bad in (r.minimum - 1, r.maximum + 1, float("nan"), "32"):
        with pytest.raises(QualityError) as info:
            codec.encode(small_crop, bad)
        assert codec.name in str(info.value)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.uint16), np.zeros((0, 8, 3), np.uint8), [[1, 2, 3]]])
def test_bad_arrays(coded, bad) -> None:
    codec, _ = coded
    with pytest.raises(InvalidImageError, match=codec.name):
        codec.encode(bad, mid_quality(codec))


def test_unknown_codec_lists_known_ones() -> None:
    with pytest.raises(UnknownCodecError) as info:
        get_codec("vvcc")
    message = str(info.value)
    assert "'vvcc'" in message and "Did you mean 'vvc'" in message and "jpeg" in message


def test_bad_codec_parameter_names_codec() -> None:
    from vcm_plugin import VcmError

    with pytest.raises(VcmError, match="'vvc'.*preset"):
        get_codec("vvc", preset="ludicrous")
    with pytest.raises(VcmError, match="'jpeg'"):
        get_codec("jpeg", no_such_option=1)


def test_bitstream_type_checked(coded) -> None:
    codec, _ = coded
    with pytest.raises(DecodeError):
        codec.decode(b"not a Bitstream")  # type: ignore[arg-type]
    assert isinstance(Bitstream(b"x", codec.name, 1, 1, 1), Bitstream)
