"""Reading and writing images as (H, W, 3) uint8 RGB arrays.

:func:`read_image` turns any image file Pillow can open into 8-bit sRGB-assumed RGB
with one fixed set of rules, so every codec and task model sees the same pixels:

- **Orientation:** the EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``),
  so a portrait photo stored sideways comes back upright.
- **Multi-frame files** (animated GIF/PNG, multi-page TIFF): frame 0 only.
- **Transparency** (LA, RGBA, PA, La, RGBa, and palette/L/RGB images with a
  ``transparency`` key): composited over a WHITE background, then the alpha is dropped:
  ``out = c * a + white * (1 - a)`` with ``a`` in 0..1, computed in float64 and rounded.
- **16 bits per sample** (I;16 grayscale, 48-bit RGB and 64-bit RGBA PNG/TIFF, 16-bit
  gray+alpha): scaled to 8 bits by ``round(v / 257)`` (so 65535 -> 255 exactly).
  Pillow would keep only the high byte of 16-bit colour files, so those are decoded
  with OpenCV (``IMREAD_UNCHANGED``) instead.
- **Mode I** (32-bit integer) is taken as 16-bit data (the range Pillow uses it for):
  clipped to 0..65535, then scaled as above. **Mode F** (float) follows Pillow's
  convention of an 0..255 scale: clipped and rounded.
- **Grayscale, 1-bit, palette, CMYK, YCbCr, LAB:** Pillow's own conversion to RGB
  (CMYK by Pillow's naive formula). ICC profiles are ignored: no colour management.
- **Decompression bombs:** Pillow's limit ``PIL.Image.MAX_IMAGE_PIXELS`` is kept; an
  image above it (where Pillow would only warn) or above twice it (where Pillow raises)
  is refused with :class:`~vcm_plugin.errors.ImageReadError`. The limit is not raised.
- **Truncated files** are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left False).

Every failure (missing, empty, not an image, truncated, too large, unsupported mode)
raises :class:`~vcm_plugin.errors.ImageReadError` naming the file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vcm_plugin.errors import ImageReadError, InvalidImageError, VcmError

__all__ = ["DATASET_IMAGE_SUFFIXES", "IMAGE_SUFFIXES", "read_image", "write_image"]

#: File suffixes (lower case) a folder of images is scanned for: formats :func:`read_image` reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: The subset the dataset layouts accept (ImageNet-style class folders, Open Images image lists):
#: the formats those datasets come in. A wider set would change which files a dataset folder
#: indexes (so its image ids, class-list hash and cache keys) and would read an Open Images list
#: line ``<id>.webp`` as a file name instead of a bare image id.
DATASET_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")

_SIXTEEN_BIT_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_EXIF_ORIENTATION = 0x0112
# The transposition for each EXIF orientation value, as in PIL.ImageOps.exif_transpose.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (rules in the module docstring).

    Raises :class:`~vcm_plugin.errors.ImageReadError` naming ``path`` on any failure.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"cannot read image {path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"cannot read image {path}: it is a directory")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if size == 0:
        raise ImageReadError(f"cannot read image {path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_pixel_limit(img, path)
                return _decode(img, path)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"cannot read image {path}: refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"cannot read image {path}: not a recognised image file") from exc
    except OSError as exc:  # truncated or corrupt data, permission denied, ...
        reason = exc.strerror if exc.strerror else str(exc)
        raise ImageReadError(f"cannot read image {path}: {reason}") from exc
    except Exception as exc:  # any other decoder failure
        raise ImageReadError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc


def write_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 RGB array; the format follows the suffix.

    ``.png`` writes lossless PNG (the format to use for anything measured later);
    ``.jpg``/``.jpeg`` write baseline JPEG at ``quality`` (1..95, Pillow's scale). The
    file is encoded in memory first, so an encoding failure leaves no partial file.
    Errors name ``path``.
    """
    path = Path(path)
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"shape {image.shape} dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidImageError(f"cannot write image {path}: expected an (H, W, 3) uint8 RGB array, got {got}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"cannot write image {path}: the image has zero size {image.shape}")
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise VcmError(f"cannot write image {path}: unsupported suffix {path.suffix!r} "
                       f"(use one of {', '.join(sorted(_WRITE_FORMATS))})")
    options = {"quality": int(quality)} if fmt == "JPEG" else {}
    buffer = io.BytesIO()
    try:
        Image.fromarray(np.ascontiguousarray(image), "RGB").save(buffer, format=fmt, **options)
    except (OSError, ValueError) as exc:
        raise VcmError(f"cannot write image {path}: {fmt} encoding failed ({exc})") from exc
    try:
        path.write_bytes(buffer.getvalue())
    except OSError as exc:
        raise VcmError(f"cannot write image {path}: {exc.strerror or exc}") from exc


# -- helpers -----------------------------------------------------------------------------
def _check_pixel_limit(img: Image.Image, path: Path) -> None:
    """Refuse images above Pillow's limit even when the warnings filter was changed elsewhere."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = img.size[0] * img.size[1]
    if limit is not None and pixels > limit:
        raise ImageReadError(f"cannot read image {path}: refused as a possible decompression bomb "
                             f"({img.size[0]}x{img.size[1]} = {pixels} pixels > PIL.Image.MAX_IMAGE_PIXELS {limit})")


def _rawmode(img: Image.Image) -> str:
    """The decoder's raw mode (e.g. ``"RGB;16B"``), or "" when Pillow does not expose it."""
    tile = getattr(img, "tile", None)
    if not tile:
        return ""
    args = tile[0][3]
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _decode(img: Image.Image, path: Path) -> np.ndarray:
    """Frame 0 of an open image as (H, W, 3) uint8 RGB, upright."""
    if img.mode in ("RGB", "RGBA", "LA") and ";16" in _rawmode(img):
        # 16-bit colour / gray+alpha: Pillow keeps only the high byte, OpenCV keeps 16 bits.
        orientation = img.getexif().get(_EXIF_ORIENTATION)
        rgb = _decode_16bit_colour(path)
        if orientation in _ORIENTATION_TRANSPOSE:
            rgb = np.asarray(Image.fromarray(rgb, "RGB").transpose(_ORIENTATION_TRANSPOSE[orientation]))
        return np.ascontiguousarray(rgb)
    img.load()  # raises on truncated data
    img = ImageOps.exif_transpose(img)
    return _pillow_to_rgb(img, path)


def _decode_16bit_colour(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16:
        raise ImageReadError(f"cannot read image {path}: OpenCV could not decode this 16-bit image")
    if decoded.ndim == 2:
        decoded = decoded[..., None]
    channels = decoded.shape[2]
    if channels in (1, 2):
        color = np.repeat(decoded[..., :1], 3, axis=2)
    elif channels in (3, 4):
        color = decoded[..., 2::-1]  # BGR(A) -> RGB
    else:
        raise ImageReadError(f"cannot read image {path}: unsupported {channels}-channel 16-bit image")
    values = color.astype(np.float64)
    if channels in (2, 4):
        values = _composite_over_white(values, decoded[..., -1], peak=65535.0)
    return _round_to_uint8(values / 257.0)


def _pillow_to_rgb(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode in _SIXTEEN_BIT_GRAY_MODES:
        gray = np.clip(np.asarray(img).astype(np.float64), 0, 65535) / 257.0
        return np.repeat(_round_to_uint8(gray)[..., None], 3, axis=2)
    if mode == "F":
        return np.repeat(_round_to_uint8(np.asarray(img).astype(np.float64))[..., None], 3, axis=2)
    try:
        if mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = np.asarray(img.convert("RGBA"))
            return _round_to_uint8(_composite_over_white(rgba[..., :3].astype(np.float64), rgba[..., 3], peak=255.0))
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))
    except ValueError as exc:  # a mode Pillow cannot convert
        raise ImageReadError(f"cannot read image {path}: cannot convert mode {mode!r} to RGB ({exc})") from exc


def _composite_over_white(color: np.ndarray, alpha: np.ndarray, peak: float) -> np.ndarray:
    """``color * a + peak * (1 - a)`` with ``a = alpha / peak``; float64 in, float64 out."""
    a = alpha.astype(np.float64)[..., None] / peak
    return color * a + peak * (1.0 - a)


def _round_to_uint8(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
