"""Image input/output as (H, W, 3) uint8 RGB arrays, and pixel-fidelity metrics."""

from vcm_plugin.images.io import read_image, write_image
from vcm_plugin.images.metrics import luma_bt601, mse, psnr_rgb, psnr_y

__all__ = ["luma_bt601", "mse", "psnr_rgb", "psnr_y", "read_image", "write_image"]
