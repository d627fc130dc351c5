"""Pixel-fidelity metrics between a reference image and its decoded version.

Conventions (the ones ``../shared/ENVIRONMENT.md`` uses for its VVC table, and
CompressAI uses for RGB PSNR):

- :func:`mse` and :func:`psnr_rgb` pool the squared error over ALL samples (every
  pixel of all three channels), in float64; this is not the mean of per-channel PSNRs.
- :func:`psnr_y` measures luma only: ``Y = 0.299 R + 0.587 G + 0.114 B`` (BT.601
  weights, full range, no offset), computed in float64 from the 8-bit RGB values and
  NOT rounded, with peak 255. It is not the Y of the codec's own Y'CbCr (VVC codes
  BT.709 limited range), so it compares codecs on equal terms from RGB.
- PSNR is ``10 log10(peak^2 / MSE)`` in dB, and ``inf`` for identical images.
- :func:`ms_ssim` is pytorch-msssim's MS-SSIM (Wang et al. 2003: 5 scales, 11x11
  Gaussian window sigma 1.5, the standard weights) on RGB with data range 255, averaged
  over the channels; unitless in [0, 1]. It runs on one torch thread whatever torch's setting:
  its ~300 small operations per image cost several times more on two threads than on one (the
  threads synchronise after each), and the value is the same. It is undefined for images whose shorter side is
  at most :data:`MS_SSIM_MIN_SIDE` (160) pixels (four 2x downsamplings of an 11-tap
  window), and returns ``None`` there instead of a number from fewer scales.

:data:`IMAGE_METRICS` registers the per-image metrics the harness records for every decoded
image (one column each in the results store, ``results.csv`` and ``vcm compare``): adding one
is one :func:`register_image_metric` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vcm_plugin.errors import InvalidImageError

__all__ = ["BT601_LUMA", "IMAGE_METRICS", "MS_SSIM_MIN_SIDE", "ImageMetric", "image_metrics", "luma_bt601", "ms_ssim",
           "mse", "psnr_rgb", "psnr_y", "register_image_metric"]

#: MS-SSIM needs a shorter side above this (pixels): (11 - 1) * 2 ** 4.
MS_SSIM_MIN_SIDE = 160

#: BT.601 luma weights for R, G, B.
BT601_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def _check_pair(reference: np.ndarray, decoded: np.ndarray, metric: str) -> None:
    for name, arr in (("reference", reference), ("decoded", decoded)):
        if not isinstance(arr, np.ndarray):
            raise InvalidImageError(f"{metric}: {name} must be a numpy array, got {type(arr).__name__}")
    if reference.shape != decoded.shape or reference.dtype != decoded.dtype:
        raise InvalidImageError(
            f"{metric}: reference is shape {reference.shape} dtype {reference.dtype} but decoded is "
            f"shape {decoded.shape} dtype {decoded.dtype}; they must match"
        )
    if reference.ndim != 3 or reference.shape[2] != 3 or reference.size == 0:
        raise InvalidImageError(f"{metric}: images must be non-empty (H, W, 3) RGB arrays, got shape {reference.shape}")


def _psnr_from_mse(error: float, peak: float) -> float:
    return math.inf if error == 0 else 10.0 * math.log10(peak * peak / error)


def mse(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Mean squared error over all samples of two (H, W, 3) images, in squared sample units."""
    _check_pair(reference, decoded, "mse")
    diff = reference.astype(np.float64) - decoded.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr_rgb(reference: np.ndarray, decoded: np.ndarray, peak: float = 255) -> float:
    """PSNR in dB over all three channels (pooled MSE); ``inf`` when identical.

    ``peak`` is the largest sample value: 255 for uint8 images.
    """
    if not peak > 0:
        raise ValueError(f"psnr_rgb: peak must be positive, got {peak!r}")
    return _psnr_from_mse(mse(reference, decoded), float(peak))


def luma_bt601(image: np.ndarray) -> np.ndarray:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of an (H, W, 3) RGB array, float64 (H, W)."""
    return image.astype(np.float64) @ BT601_LUMA


def psnr_y(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of BT.601 luma computed from 8-bit RGB, peak 255; ``inf`` when identical."""
    _check_pair(reference, decoded, "psnr_y")
    if reference.dtype != np.uint8:
        raise InvalidImageError(f"psnr_y: images must be uint8 RGB, got dtype {reference.dtype}")
    diff = luma_bt601(reference) - luma_bt601(decoded)
    return _psnr_from_mse(float(np.mean(diff * diff)), 255.0)


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float | None:
    """MS-SSIM of two uint8 (H, W, 3) RGB images (pytorch-msssim, 5 scales); ``None`` when too small."""
    _check_pair(reference, decoded, "ms_ssim")
    if min(reference.shape[:2]) <= MS_SSIM_MIN_SIDE:
        return None
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1).unsqueeze(0)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops: faster on one thread, and the same value (tests/test_images.py)
    try:
        with torch.no_grad():
            return float(_ms_ssim(tensor(reference), tensor(decoded), data_range=255.0, size_average=True))
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class ImageMetric:
    """A per-image metric: ``name`` (its column), ``func(reference, decoded) -> value | None`` (None:
    undefined for this image), ``unit`` (for documentation) and ``digits`` (decimals in reports).
    A point's value is the mean of the per-image values where defined (``inf`` when all are)."""

    name: str
    func: Callable[[np.ndarray, np.ndarray], float | None]
    unit: str
    digits: int = 3


#: name -> metric, in report column order
IMAGE_METRICS: dict[str, ImageMetric] = {}


def register_image_metric(metric: ImageMetric) -> ImageMetric:
    """Add ``metric`` to :data:`IMAGE_METRICS` (a name must be a plain identifier: it is a column name)."""
    if not metric.name.isidentifier():
        raise ValueError(f"image metric name {metric.name!r} must be an identifier")
    IMAGE_METRICS[metric.name] = metric
    return metric


def image_metrics(reference: np.ndarray, decoded: np.ndarray) -> dict[str, float | None]:
    """Every registered metric of ``decoded`` against ``reference`` (same-size uint8 RGB images)."""
    return {name: m.func(reference, decoded) for name, m in IMAGE_METRICS.items()}


register_image_metric(ImageMetric("psnr_y", psnr_y, "dB"))
register_image_metric(ImageMetric("psnr_rgb", psnr_rgb, "dB"))
register_image_metric(ImageMetric("ms_ssim", ms_ssim, "unitless, 0..1", digits=5))
