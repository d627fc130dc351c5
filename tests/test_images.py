"""read_image / write_image on every input kind, and the PSNR metrics."""

from __future__ import annotations

import math
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from vcm_plugin import ImageReadError, InvalidImageError, VcmError, get_codec, read_image, write_image
from vcm_plugin.images import luma_bt601, mse, psnr_rgb, psnr_y

RNG = np.random.default_rng(1234)


def _read_error(path: Path) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value), f"error message does not name the file: {info.value}"
    return str(info.value)


def _white_composite(color: np.ndarray, alpha: np.ndarray, peak: float = 255.0) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / peak
    return color.astype(np.float64) * a + peak * (1 - a)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _insert_png_chunk(path: Path, kind: bytes, data: bytes) -> None:
    """Insert a chunk right after IHDR (signature 8 + IHDR 25 bytes)."""
    blob = path.read_bytes()
    path.write_bytes(blob[:33] + _png_chunk(kind, data) + blob[33:])


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """What EXIF orientation ``orientation`` means for a stored array (by the EXIF spec)."""
    return {
        1: a,
        2: a[:, ::-1],
        3: a[::-1, ::-1],
        4: a[::-1],
        5: a.transpose(1, 0, 2),
        6: np.rot90(a, -1),  # stored rotated 90 degrees counter-clockwise: turn clockwise
        7: a[::-1, ::-1].transpose(1, 0, 2),
        8: np.rot90(a, 1),
    }[orientation]


# -- real data ---------------------------------------------------------------------------------------
def test_kodak_png_reads_as_rgb_uint8(shared: Path) -> None:
    path = shared / "data" / "kodak" / "kodim04.png"
    image = read_image(str(path))  # str accepted as well as Path
    assert image.shape == (768, 512, 3) and image.dtype == np.uint8
    with Image.open(path) as img:
        np.testing.assert_array_equal(image, np.asarray(img))
    np.testing.assert_array_equal(read_image(path), image)


def test_coco_jpeg_reads(shared: Path) -> None:
    path = shared / "data" / "coco" / "val2017" / "000000183709.jpg"
    image = read_image(path)
    with Image.open(path) as img:
        assert image.shape == (img.height, img.width, 3)
    assert image.dtype == np.uint8 and image.std() > 10


# -- modes --------------------------------------------------------------------------------------------
def test_grayscale_is_replicated(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(path)
    image = read_image(path)
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], gray)


def test_one_bit_image(tmp_path: Path) -> None:
    path = tmp_path / "bits.png"
    Image.fromarray(np.array([[True, False]])).save(path)
    np.testing.assert_array_equal(read_image(path), [[[255] * 3, [0] * 3]])


def test_la_composited_over_white(tmp_path: Path) -> None:
    gray = np.array([[100, 100, 100, 0]], dtype=np.uint8)
    alpha = np.array([[255, 128, 0, 64]], dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([gray, alpha], -1), "LA").save(path)
    image = read_image(path)
    # 100 opaque; 100*128/255 + 255*127/255 = 177.2; fully transparent -> white; 0 at 64 -> 191
    np.testing.assert_array_equal(image[0, :, 0], [100, 177, 255, 191])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, (6, 9, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgba[0, 1] = (10, 20, 30, 0)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = read_image(path)
    assert image.shape == (6, 9, 3)
    np.testing.assert_array_equal(image[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(image[0, 1], (255, 255, 255))
    expected = np.rint(_white_composite(rgba[..., :3], rgba[..., 3])).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    palette = [255, 0, 0, 0, 0, 255, 0, 128, 0] + [0] * (256 * 3 - 9)
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    img = Image.fromarray(indices, "P")
    img.putpalette(palette)
    opaque = tmp_path / "p.png"
    img.save(opaque)
    np.testing.assert_array_equal(read_image(opaque)[0], [(255, 0, 0), (0, 0, 255), (0, 128, 0)])
    transparent = tmp_path / "p_trns.png"
    img.save(transparent, transparency=1)  # index 1 (blue) is transparent
    with Image.open(transparent) as check:
        assert check.mode == "P" and "transparency" in check.info
    np.testing.assert_array_equal(read_image(transparent)[0], [(255, 0, 0), (255, 255, 255), (0, 128, 0)])


def test_palette_with_alpha_gif(tmp_path: Path) -> None:
    img = Image.new("P", (4, 2), 0)
    img.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    path = tmp_path / "trns.gif"
    img.save(path, transparency=0)
    image = read_image(path)
    np.testing.assert_array_equal(image[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(image[0, 1], (200, 100, 0))


def test_16bit_gray_png_scaled_by_257(tmp_path: Path) -> None:
    values = np.array([[0, 255, 128, 257 * 100, 65535, 386, 385]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    assert cv2.imwrite(str(path), values)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")
    image = read_image(path)
    # round(v / 257); the high byte would give 0 for 255 and 1 for 386
    np.testing.assert_array_equal(image[0, :, 0], [0, 1, 0, 100, 255, 2, 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 1])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_48bit_rgb_scaled_by_257_not_truncated(tmp_path: Path, suffix: str) -> None:
    rgb16 = RNG.integers(0, 65536, (8, 10, 3), dtype=np.uint16)
    rgb16[0, 0] = (255, 65535, 0)  # R: high byte 0, round(255/257) = 1
    rgb16[0, 1] = (386, 0, 257 * 7)
    path = tmp_path / f"rgb48{suffix}"
    assert cv2.imwrite(str(path), rgb16[..., ::-1])  # OpenCV writes BGR
    image = read_image(path)
    assert image.shape == (8, 10, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.rint(rgb16 / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(image[0, 0], (1, 255, 0))
    np.testing.assert_array_equal(image[0, 1], (2, 0, 7))


def test_64bit_rgba_png_composited_at_16_bits(tmp_path: Path) -> None:
    rgba16 = RNG.integers(0, 65536, (4, 6, 4), dtype=np.uint16)
    rgba16[0, 0, 3] = 0
    path = tmp_path / "rgba64.png"
    assert cv2.imwrite(str(path), rgba16[..., [2, 1, 0, 3]])
    image = read_image(path)
    expected = np.rint(_white_composite(rgba16[..., :3], rgba16[..., 3], 65535.0) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(image[0, 0], (255, 255, 255))


def test_16bit_gray_alpha_png(tmp_path: Path) -> None:
    # Neither Pillow nor OpenCV writes 16-bit gray+alpha: build the PNG by hand (colour type 4).
    ga = np.array([[[65535, 65535], [0, 65535], [25700, 0], [0, 32768]]], dtype=np.uint16)
    height, width = ga.shape[:2]
    raw = b"".join(b"\x00" + ga[y].astype(">u2").tobytes() for y in range(height))
    path = tmp_path / "ga16.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0))
                     + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))
    image = read_image(path)
    # 0 at alpha 32768/65535 over white: 65535 * 32767 / 65535 / 257 = 127.5 -> 127
    np.testing.assert_array_equal(image[0, :, 0], [255, 0, 255, 127])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_mode_i_and_f_tiff(tmp_path: Path) -> None:
    int_path = tmp_path / "int32.tif"
    Image.fromarray(np.array([[0, 65535, 70000, 771, -4]], dtype=np.int32), "I").save(int_path)
    np.testing.assert_array_equal(read_image(int_path)[0, :, 1], [0, 255, 255, 3, 0])
    float_path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0, 100.4, 300, -5, 254.6]], dtype=np.float32), "F").save(float_path)
    np.testing.assert_array_equal(read_image(float_path)[0, :, 2], [0, 100, 255, 0, 255])


def test_cmyk_jpeg_uses_pillow_conversion(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    with Image.open(path) as img:
        assert img.mode == "CMYK"
        expected = np.asarray(img.convert("RGB"))
    image = read_image(path)
    np.testing.assert_array_equal(image, expected)
    assert np.abs(image.astype(int) - (255, 0, 0)).max() <= 3


def test_ycbcr_tiff(tmp_path: Path) -> None:
    path = tmp_path / "ycbcr.tif"
    Image.new("RGB", (8, 8), (200, 30, 60)).convert("YCbCr").save(path)
    with Image.open(path) as img:
        assert img.mode == "YCbCr"
    image = read_image(path)
    assert image.shape == (8, 8, 3)
    assert np.abs(image.astype(int) - (200, 30, 60)).max() <= 2


# -- orientation and frames -----------------------------------------------------------------------
def _blocky(height: int, width: int) -> np.ndarray:
    """16x16 flat blocks of distinct colours: survives JPEG and shows any rotation."""
    blocks = RNG.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)


def test_exif_rotated_jpeg_orientation_6(tmp_path: Path) -> None:
    stored = _blocky(32, 64)  # stored landscape 64 wide, 32 high
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=_exif_orientation(6))
    image = read_image(path)
    assert image.shape == (64, 32, 3)  # displayed portrait
    assert np.abs(image.astype(int) - np.rot90(stored, -1)).mean() < 3
    assert np.abs(image.astype(int) - np.rot90(stored, 1)).mean() > 20


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_png(tmp_path: Path, orientation: int) -> None:
    stored = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    path = tmp_path / f"orient{orientation}.png"
    Image.fromarray(stored).save(path, exif=_exif_orientation(orientation))
    np.testing.assert_array_equal(read_image(path), _orient(stored, orientation))


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_exif_orientation_on_48bit_png(tmp_path: Path, orientation: int) -> None:
    rgb16 = RNG.integers(0, 65536, (3, 5, 3), dtype=np.uint16)
    path = tmp_path / "rgb48_rot.png"
    assert cv2.imwrite(str(path), rgb16[..., ::-1])
    _insert_png_chunk(path, b"eXIf", _exif_orientation(orientation)[6:])  # eXIf holds the TIFF part only
    with Image.open(path) as img:
        assert img.getexif().get(0x0112) == orientation
    expected = _orient(np.rint(rgb16 / 257.0).astype(np.uint8), orientation)
    np.testing.assert_array_equal(read_image(path), expected)


@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_multi_frame_takes_frame_0(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"frames{suffix}"
    first, second = Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))
    first.save(path, save_all=True, append_images=[second])
    with Image.open(path) as img:
        assert img.n_frames == 2
    image = read_image(path)
    assert image.shape == (6, 8, 3)
    np.testing.assert_array_equal(image[3, 4], (255, 0, 0))


# -- errors ---------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _read_error(tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    assert "directory" in _read_error(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "empty" in _read_error(path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    assert "not a recognised image" in _read_error(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"truncated{suffix}"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    assert "truncated" in _read_error(path)


@pytest.mark.parametrize("limit", [6000, 4000])  # 10,000 pixels: Pillow warns above 6000, raises above 2 x 4000
def test_decompression_bomb_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    assert read_image(path).shape == (100, 100, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "decompression bomb" in _read_error(path)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]  # an error, not a warning


def test_pixel_limit_checked_without_pillows_own_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 9999)
    monkeypatch.setattr(Image, "_decompression_bomb_check", lambda size: None)  # e.g. a warnings race
    assert "9999" in _read_error(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the user's explicit opt-out is respected
    assert read_image(path).shape == (100, 100, 3)


# -- write_image ----------------------------------------------------------------------------------
def test_write_png_is_lossless(tmp_path: Path) -> None:
    image = RNG.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    path = tmp_path / "out.png"
    write_image(path, image)
    with Image.open(path) as img:
        assert img.format == "PNG"
    np.testing.assert_array_equal(read_image(path), image)


def test_write_jpeg_by_suffix(tmp_path: Path) -> None:
    image = _blocky(32, 48)
    path = tmp_path / "out.JPEG"
    write_image(str(path), image, quality=90)
    with Image.open(path) as img:
        assert img.format == "JPEG"
    decoded = read_image(path)
    assert 0 < np.abs(decoded.astype(int) - image).mean() < 3


def test_write_errors_name_the_path(tmp_path: Path) -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    for path in (tmp_path / "missing_dir" / "out.png", tmp_path / "out.bmp", tmp_path / "noext"):
        with pytest.raises(VcmError) as info:
            write_image(path, image)
        assert str(path) in str(info.value)
        assert not path.exists()
    bad = tmp_path / "bad.png"
    with pytest.raises(InvalidImageError, match="bad.png"):
        write_image(bad, np.zeros((4, 4), np.uint8))
    with pytest.raises(InvalidImageError, match="float"):
        write_image(bad, np.zeros((4, 4, 3), np.float32))


# -- metrics --------------------------------------------------------------------------------------
def test_identical_images_give_inf() -> None:
    image = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert mse(image, image.copy()) == 0.0
    assert psnr_rgb(image, image.copy()) == math.inf
    assert psnr_y(image, image.copy()) == math.inf


def test_known_mse_gives_known_psnr() -> None:
    reference = np.full((4, 4, 3), 100, np.uint8)
    decoded = reference.copy()
    decoded[..., 0] = 110  # error 10 on one of three channels -> MSE 100 / 3
    assert mse(reference, decoded) == pytest.approx(100 / 3)
    assert psnr_rgb(reference, decoded) == pytest.approx(10 * math.log10(255**2 / (100 / 3)))
    # no uint8 wrap-around: 0 vs 255 is an error of 255, not 1
    assert psnr_rgb(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)) == pytest.approx(0.0)
    wide = np.zeros((2, 2, 3), np.uint16)
    assert psnr_rgb(wide, wide + 655, peak=65535) == pytest.approx(10 * math.log10(65535**2 / 655**2))


def test_psnr_y_hand_computed() -> None:
    reference = np.zeros((1, 2, 3), np.uint8)
    decoded = reference.copy()
    decoded[0, 0] = (10, 0, 0)  # Y error 2.99 on one of two pixels
    assert psnr_y(reference, decoded) == pytest.approx(10 * math.log10(255**2 / (2.99**2 / 2)))
    assert psnr_rgb(reference, decoded) == pytest.approx(10 * math.log10(255**2 / (100 / 6)))
    gray_shift = reference + 4  # equal change in R, G, B: Y changes by the same amount
    assert psnr_y(reference, gray_shift) == pytest.approx(psnr_rgb(reference, gray_shift))
    np.testing.assert_allclose(luma_bt601(np.array([[[255, 255, 255], [0, 0, 255]]], np.uint8)), [[255.0, 29.07]])


def test_metric_mismatch_names_both_shapes() -> None:
    a = np.zeros((4, 5, 3), np.uint8)
    for metric in (mse, psnr_rgb, psnr_y):
        with pytest.raises(InvalidImageError) as info:
            metric(a, np.zeros((5, 4, 3), np.uint8))
        assert "(4, 5, 3)" in str(info.value) and "(5, 4, 3)" in str(info.value)
        with pytest.raises(InvalidImageError, match="float32"):
            metric(a, a.astype(np.float32))
    with pytest.raises(InvalidImageError, match=r"\(4, 5\)"):
        psnr_rgb(a[..., 0], a[..., 0])


@pytest.mark.slow
def test_vvc_qp32_kodim23_matches_environment_table(kodim23: np.ndarray) -> None:
    codec = get_codec("vvc")
    bitstream = codec.encode(kodim23, 32)
    decoded = codec.decode(bitstream)
    # ../shared/ENVIRONMENT.md: kodim23, medium, QP 32 -> 11,026 bytes, 0.224 bpp, PSNR-Y 39.09 dB
    assert psnr_y(kodim23, decoded) == pytest.approx(39.09, abs=0.3)
    assert bitstream.bpp == pytest.approx(0.224, abs=0.01)
    assert psnr_rgb(kodim23, decoded) < psnr_y(kodim23, decoded)


@pytest.mark.parametrize("size", [(161, 161), (480, 640), (512, 768)])
def test_ms_ssim_runs_on_one_thread_with_the_value_of_any_thread_count(kodim23: np.ndarray, size) -> None:
    """ms_ssim uses one torch thread (several times faster) and gives pytorch-msssim's value at 1, 2 and 4
    threads to the last bit; torch's own setting is left as it was."""
    import torch
    from pytorch_msssim import ms_ssim as library_ms_ssim

    from vcm_plugin.images.metrics import ms_ssim

    h, w = size
    reference = np.ascontiguousarray(kodim23[:h, :w])
    decoded = get_codec("jpeg").decode(get_codec("jpeg").encode(reference, 15))

    def tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)

    before = torch.get_num_threads()
    try:
        values = set()
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            with torch.no_grad():
                values.add(float(library_ms_ssim(tensor(reference), tensor(decoded), data_range=255.0)))
            values.add(ms_ssim(reference, decoded))
            assert torch.get_num_threads() == threads
        assert len(values) == 1
    finally:
        torch.set_num_threads(before)
