"""VCM pre-scaling: sizes rounded up to even, ffmpeg bicubic both ways."""

from __future__ import annotations

import numpy as np
import pytest

from vcm_plugin.images.metrics import psnr_y
from vcm_plugin.images.resize import prescale, resize_rgb, scaled_size


@pytest.mark.parametrize("scale, expected", [(1.0, (447, 1024)), (0.75, (336, 768)), (0.5, (224, 512)),
                                             (0.25, (112, 256))])
def test_scaled_sizes_are_even_and_rounded_up(scale: float, expected: tuple[int, int]) -> None:
    assert scaled_size(447, 1024, scale) == expected


def test_round_trip_keeps_the_original_size_and_content(kodim23: np.ndarray) -> None:
    small = prescale(kodim23, 0.5)
    assert small.shape == (256, 384, 3)
    back = resize_rgb(small, *kodim23.shape[:2])
    assert back.shape == kodim23.shape
    assert 25 < psnr_y(kodim23, back) < 45  # smooth image: close, but detail is lost
    assert prescale(kodim23, 1.0) is kodim23
