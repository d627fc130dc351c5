"""The conformance kit of ``vcm check-codec``: does a codec keep the :class:`~vcm_plugin.codecs.base.Codec` contract?

:func:`check_codec` runs these checks, each in a thread under a wall-clock limit (a codec that hangs is
reported as such and the remaining checks are not run), with fd 1 and ``sys.stdout`` captured:

* ``round trip``: the embedded sample images (:mod:`vcm_plugin.sample`) encode and decode to what the
  codec's output point takes: an (H, W, 3) uint8 picture of the input size for image codecs, a
  :class:`~vcm_plugin.tasks.split.CutValue` that the task model's ``run_from`` accepts for task-aware
  codecs. Its encode and decode times give the milliseconds per megapixel of the report.
* ``determinism``: encoding the first image twice gives the same bytes.
* ``fresh-process decode``: the ``.vcmb`` file alone (:meth:`Bitstream.to_bytes`), decoded by a new
  Python process that builds the codec from the stream's parameters (:mod:`.child`), gives exactly the
  in-process output. A codec that keeps state between encode and decode (a side channel: its rate is
  not honest) fails here.
* ``rate monotone``: the bits of a 256x256 crop at a few qualities spread over ``quality_range``
  (:func:`spread_qualities`) never fall as quality moves toward more bits (``higher_is_more_bits``), and
  are not all equal. ``n/a`` (not a failure) when every one of those qualities loads the same weights
  (:meth:`~vcm_plugin.codecs.base.Codec.weights_identity`): one trained point, e.g. a ``direct``
  checkpoint path without ``{quality}``, has one rate by construction.
* ``corrupt streams``: truncated and damaged streams raise :class:`~vcm_plugin.errors.DecodeError`,
  neither another exception nor a silent output.
* ``odd sizes``: 1x1, 3x5 and 4001x1 (width x height) pictures and 16-bit colour, 16-bit grey and 8-bit
  grey PNGs read by :func:`~vcm_plugin.images.io.read_image` are coded to the right size or refused with
  InvalidImageError / EncodeError / ImageReadError.
* ``stdout clean``: nothing reached stdout while coding (it breaks piping), the fresh process included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from vcm_plugin.codecs.base import Bitstream, Codec, Quality, QualityRange
from vcm_plugin.codecs.registry import get_codec
from vcm_plugin.errors import DecodeError, EncodeError, ImageReadError, InputError, InvalidImageError
from vcm_plugin.tasks.split import CutValue

logger = logging.getLogger(__name__)

#: The rows of a report, in the order they run (``stdout clean`` sums up the others).
CHECKS = ("round trip", "determinism", "fresh-process decode", "rate monotone", "corrupt streams", "odd sizes",
          "stdout clean")
#: Refusals the ``odd sizes`` check accepts (a clear "cannot code this" from the codec or the image reader).
ACCEPTED_REFUSALS = (InvalidImageError, EncodeError, ImageReadError)
RATE_CROP = 256  # pixels: side of the centre crop the rate check codes

Status = Literal["pass", "fail", "not run", "n/a"]


@dataclass(frozen=True)
class CheckResult:
    """One row: the check, its status, what was checked (pass) or why it failed, and its wall time in seconds."""

    check: str
    status: Status
    detail: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Passed, or does not apply to this configuration (``n/a``, with the reason in ``detail``)."""
        return self.status in ("pass", "n/a")


@dataclass(frozen=True)
class ConformanceReport:
    """Every check of one codec configuration, and its speed on the sample (milliseconds per megapixel)."""

    codec: str
    params: dict[str, Any]
    quality: Quality
    checks: tuple[CheckResult, ...]
    images: int
    megapixels: float
    encode_ms_per_mp: float | None
    decode_ms_per_mp: float | None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def result(self, check: str) -> CheckResult:
        """The row of ``check`` (one of :data:`CHECKS`)."""
        return next(c for c in self.checks if c.check == check)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]


class _Failed(Exception):
    """A check's failure, with its reason."""


class _NotApplicable(Exception):
    """The check does not apply to this codec configuration, with the reason."""


def corrupt_variants(data: bytes, header: int = 4) -> dict[str, bytes]:
    """Damaged copies of a stream's ``data`` that every decoder must refuse: truncations, zeros after the first
    ``header`` bytes, random bytes of the same length (seeded)."""
    n = len(data)
    garbage = np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes()
    return {
        "truncated to half": data[: n // 2],
        "truncated by 3 bytes": data[: n - 3],
        "truncated to 10 bytes": data[:10],
        "zeroed after the header": data[:header] + bytes(max(n - header, 0)),
        "random garbage": garbage,
    }


def as_arrays(value: Any) -> dict[str, np.ndarray]:
    """A decoded output as named numpy arrays (a picture, or a CutValue's tensors and geometry), for
    exact comparison across processes."""
    if isinstance(value, CutValue):
        arrays = {f"tensor:{name}": _numpy(t) for name, t in value.tensors.items()}
        geometry = json.dumps(value.geometry, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist")
                              else str(o))
        return {**arrays, "geometry": np.array(geometry)}
    return {"image": _numpy(value)}


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _difference(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> str | None:
    """Why two :func:`as_arrays` outputs differ, or None when identical."""
    if sorted(expected) != sorted(got):
        return f"outputs {sorted(got)} instead of {sorted(expected)}"
    for key, a in expected.items():
        b = got[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{key}: {b.dtype}{list(b.shape)} instead of {a.dtype}{list(a.shape)}"
        if not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
            if a.dtype.kind in "fciu":
                diff = int(np.count_nonzero(a != b))
                return f"{key}: {diff} of {a.size} values differ"
            return f"{key}: differs ({b!s:.60} instead of {a!s:.60})"
    return None


def _mid_quality(quality_range: QualityRange) -> Quality:
    mid = (quality_range.minimum + quality_range.maximum) / 2
    return int(mid) if quality_range.integer else float(mid)


def spread_qualities(quality_range: QualityRange, count: int) -> list[Quality]:
    """The centres of ``count`` equal parts of ``quality_range`` (integers rounded, duplicates dropped), ascending:
    spread over the range without its extremes, whose coding is the slowest (e.g. QP 0)."""
    low, high = float(quality_range.minimum), float(quality_range.maximum)
    values = low + (np.arange(count) + 0.5) * (high - low) / count
    if quality_range.integer:
        return sorted({int(round(v)) for v in values})
    return sorted({round(float(v), 6) for v in values})


def sample_images(limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(file name, RGB picture) of the embedded sample: the Kodak PNGs, then the COCO jpgs; at most ``limit``."""
    from vcm_plugin.images.io import read_image
    from vcm_plugin.sample import coco_images_dir, kodak_images

    paths = [*kodak_images(), *sorted(coco_images_dir().glob("*.jpg"))][:limit]
    return [(p.name, read_image(p)) for p in paths]


def _flush(stream: Any) -> None:
    with contextlib.suppress(Exception):
        stream.flush()


@contextlib.contextmanager
def capture_stdout() -> Iterator[list[bytes]]:
    """Capture what is written to stdout inside the block, at fd 1 (C libraries, child processes) and
    ``sys.stdout``; the list yielded holds the bytes once the block ends."""
    captured: list[bytes] = []
    text = io.StringIO()
    _flush(sys.stdout)
    _flush(sys.__stdout__)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            with contextlib.redirect_stdout(text):
                yield captured
        finally:
            _flush(sys.__stdout__)
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read() + text.getvalue().encode("utf-8", errors="replace"))


class _Run:
    """The state the checks of one codec share: its images, the first stream and its decoded output, times."""

    def __init__(self, codec: Codec, images: list[tuple[str, np.ndarray]], quality: Quality, qualities: int,
                 timeout: float, workdir: Path) -> None:
        self.codec, self.images, self.quality, self.qualities = codec, images, quality, qualities
        self.timeout, self.workdir = timeout, workdir
        self._first: tuple[Bitstream, Any] | None = None
        self.encode_s = self.decode_s = self.megapixels = 0.0
        self.timed_images = 0
        self.stdout: dict[str, bytes] = {}  # where something was written to stdout -> the bytes

    @property
    def name(self) -> str:
        return self.codec.name

    def first(self) -> tuple[Bitstream, Any]:
        """The first sample image's stream at the check quality and its in-process decoded output."""
        if self._first is None:
            label, image = self.images[0]
            stream = self.codec.encode(image, self.quality)
            self._first = (stream, self.codec.decode(stream))
        return self._first

    def output_problem(self, value: Any, shape: tuple[int, ...], run_model: bool) -> str | None:
        """Why ``value`` is not what the codec's output point takes for a picture of ``shape``; None if it is."""
        height, width = shape[:2]
        if self.codec.output_point == "input":
            got = (f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray)
                   else type(value).__name__)
            if not isinstance(value, np.ndarray) or value.shape != (height, width, 3) or value.dtype != np.uint8:
                return f"decoded a {got}, expected a uint8 array of shape {(height, width, 3)}"
            return None
        if not isinstance(value, CutValue):
            return f"decoded a {type(value).__name__}, expected a CutValue for cut point {self.codec.output_point!r}"
        if tuple(value.geometry.get("image_hw", ())) != (height, width):
            return f"the CutValue's image_hw is {value.geometry.get('image_hw')}, expected {(height, width)}"
        if run_model:
            model = getattr(self.codec, "model", None)
            if not callable(model):
                return "a task-aware codec must say its task model (a model() method) so its output can be checked"
            try:
                model().run_from(self.codec.output_point, value)
            except Exception as exc:
                return f"the task model's run_from({self.codec.output_point!r}, value) refused it: " \
                       f"{type(exc).__name__}: {exc}"
        return None


# -- the checks: each returns what it checked, or raises _Failed with the reason ---------------------------------
def _round_trip(run: _Run) -> str:
    bpps = []
    for label, image in tqdm(run.images, desc=f"{run.name}: round trip", unit="image", leave=False, disable=None):
        try:
            start = time.perf_counter()
            stream = run.codec.encode(image, run.quality)
            encoded = time.perf_counter()
            value = run.codec.decode(stream)
            decoded = time.perf_counter()
        except Exception as exc:
            raise _Failed(f"{label}: {type(exc).__name__}: {exc}") from exc
        problem = run.output_problem(value, image.shape, run_model=True)
        if problem:
            raise _Failed(f"{label}: {problem}")
        if run._first is None:
            run._first = (stream, value)
        run.encode_s += encoded - start
        run.decode_s += decoded - encoded
        run.megapixels += image.shape[0] * image.shape[1] / 1e6
        run.timed_images += 1
        bpps.append(stream.bpp)
    return (f"{len(run.images)} sample image(s) at {run.codec.quality_range.name} {run.quality}: "
            f"{min(bpps):.3f}..{max(bpps):.3f} bpp")


def _determinism(run: _Run) -> str:
    stream, _ = run.first()
    label, image = run.images[0]
    again = run.codec.encode(image, run.quality)
    for what, a, b in (("stream", stream.data, again.data), ("side information", stream.side_info, again.side_info)):
        if a != b:
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise _Failed(f"two encodings of {label} give different {what}s ({len(a)} and {len(b)} bytes, "
                          f"first difference at byte {at})")
    return f"{label} encoded twice: the same {len(stream.data)} bytes"


def _fresh_process(run: _Run) -> str:
    stream, value = run.first()
    path, out = run.workdir / "stream.vcmb", run.workdir / "decoded.npz"
    path.write_bytes(stream.to_bytes())
    machine = {k: v for k, v in run.codec.params().items() if k in run.codec.machine_params}
    command = [sys.executable, "-m", "vcm_plugin.conformance.child", str(path), str(out),
               type(run.codec).__module__, json.dumps(machine, default=str)]
    # the parent's import path, so that the codec's module (a plug-in, a test module) imports there too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([p for p in sys.path if p]
                                                        + [os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run(command, capture_output=True, env=env, timeout=run.timeout * 0.95,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise _Failed(f"the decoder in a fresh process did not finish in {run.timeout * 0.95:g} s") from exc
    if done.stdout:
        run.stdout["fresh-process decode (its child process)"] = done.stdout
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise _Failed(f"decoding the .vcmb file alone in a fresh process failed (a side channel between encoder "
                      f"and decoder?): {lines[-1] if lines else f'exit status {done.returncode}'}")
    with np.load(out, allow_pickle=False) as data:
        got = {k: data[k] for k in data.files}
    difference = _difference(as_arrays(value), got)
    if difference:
        raise _Failed(f"a fresh process decodes the .vcmb file to another output than this process (a side "
                      f"channel between encoder and decoder?): {difference}")
    return f"{len(stream.data)}-byte stream decoded from the .vcmb file alone, identical output"


def _center_crop(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max((h - side) // 2, 0), max((w - side) // 2, 0)
    return np.ascontiguousarray(image[top:top + side, left:left + side])


def _rate_monotone(run: _Run) -> str:
    quality_range = run.codec.quality_range
    qualities = spread_qualities(quality_range, run.qualities)
    weights = {run.codec.weights_identity(q) for q in qualities}
    if len(qualities) > 1 and len(weights) == 1 and None not in weights:
        raise _NotApplicable(f"every {quality_range.name} of {', '.join(map(str, qualities))} loads the same weights "
                             f"(SHA-256 {next(iter(weights))[:12]}...): one trained point has one rate")
    crop = _center_crop(run.images[0][1], RATE_CROP)
    bits = {q: run.codec.encode(crop, q).num_bits for q in qualities}
    toward_more_bits = qualities if quality_range.higher_is_more_bits else qualities[::-1]
    name = quality_range.name
    for fewer, more in zip(toward_more_bits, toward_more_bits[1:]):
        if bits[more] < bits[fewer]:
            raise _Failed(f"{name} {more} gives {bits[more]} bits, fewer than {bits[fewer]} at {name} {fewer}, "
                          f"though the codec declares {quality_range}")
    listed = ", ".join(f"{q}: {bits[q]}" for q in qualities)
    if len(qualities) > 1 and len(set(bits.values())) == 1:
        raise _Failed(f"every {name} gives the same rate ({listed} bits): the quality does not change the rate")
    return f"bits of a {crop.shape[1]}x{crop.shape[0]} crop by {name}: {listed}"


def _corrupt_streams(run: _Run) -> str:
    stream, _ = run.first()
    problems = []
    variants = {k: v for k, v in corrupt_variants(stream.data).items() if v != stream.data}
    for label, data in variants.items():
        try:
            run.codec.decode(dataclasses.replace(stream, data=data))
        except DecodeError:
            continue
        except Exception as exc:
            problems.append(f"{label}: raised {type(exc).__name__} ({exc}), not DecodeError")
        else:
            problems.append(f"{label}: decoded without an error (a damaged stream must raise DecodeError)")
    if problems:
        raise _Failed("; ".join(problems))
    return f"{len(variants)} damaged streams ({', '.join(variants)}) raise DecodeError"


def _odd_images(workdir: Path) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(label, reader) of each odd input: in-memory pictures, then PNG files read by read_image."""
    import cv2

    from vcm_plugin.images.io import read_image

    rng = np.random.default_rng(0)
    for width, height in ((1, 1), (3, 5), (4001, 1)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        yield f"{width}x{height}", lambda image=image: image
    files = {"16-bit colour PNG": rng.integers(0, 65536, (7, 9, 3), dtype=np.uint16),
             "16-bit grey PNG": rng.integers(0, 65536, (9, 7), dtype=np.uint16),
             "8-bit grey PNG": rng.integers(0, 256, (6, 5), dtype=np.uint8)}
    for i, (label, pixels) in enumerate(files.items()):
        path = workdir / f"odd{i}.png"
        cv2.imwrite(str(path), pixels)
        yield label, lambda path=path: read_image(path)


def _odd_sizes(run: _Run) -> str:
    coded, refused, problems = [], [], []
    for label, read in _odd_images(run.workdir):
        try:
            image = read()
            stream = run.codec.encode(image, run.quality)
        except ACCEPTED_REFUSALS as exc:
            refused.append(f"{label} ({type(exc).__name__})")
            continue
        except Exception as exc:
            problems.append(f"{label}: encoding raised {type(exc).__name__} ({exc}), not a clear refusal "
                            f"({' / '.join(e.__name__ for e in ACCEPTED_REFUSALS)})")
            continue
        try:
            problem = run.output_problem(run.codec.decode(stream), image.shape, run_model=False)
        except Exception as exc:
            problem = f"encoded, then decoding raised {type(exc).__name__} ({exc})"
        if problem:
            problems.append(f"{label}: {problem}")
        else:
            coded.append(label)
    if problems:
        raise _Failed("; ".join(problems))
    return f"coded: {', '.join(coded) or 'none'}" + (f"; refused: {', '.join(refused)}" if refused else "")


_CHECK_FUNCTIONS: tuple[tuple[str, Callable[[_Run], str]], ...] = (
    ("round trip", _round_trip), ("determinism", _determinism), ("fresh-process decode", _fresh_process),
    ("rate monotone", _rate_monotone), ("corrupt streams", _corrupt_streams), ("odd sizes", _odd_sizes))


def _run_check(run: _Run, check: str, func: Callable[[_Run], str]) -> tuple[CheckResult, bool]:
    """Run one check in a thread for at most ``run.timeout`` seconds; (its row, whether it hung)."""
    box: dict[str, str] = {}

    def target() -> None:
        try:
            box["detail"] = func(run)
        except _Failed as exc:
            box["failed"] = str(exc)
        except _NotApplicable as exc:
            box["n/a"] = str(exc)
        except BaseException as exc:  # noqa: BLE001 - anything a codec raises is a finding, SystemExit included
            box["failed"] = f"{type(exc).__name__}: {exc}"

    start = time.perf_counter()
    with capture_stdout() as captured:
        thread = threading.Thread(target=target, name=f"check-codec {run.name}: {check}", daemon=True)
        thread.start()
        thread.join(run.timeout)
    seconds = time.perf_counter() - start
    if captured[0]:
        run.stdout[check] = captured[0]
    if thread.is_alive():
        return CheckResult(check, "fail", f"timed out after {run.timeout:g} s: codec {run.name!r} hangs in the "
                                          f"{check!r} check", seconds), True
    if "failed" in box:
        return CheckResult(check, "fail", box["failed"], seconds), False
    if "n/a" in box:
        return CheckResult(check, "n/a", box["n/a"], seconds), False
    return CheckResult(check, "pass", box.get("detail", ""), seconds), False


def _stdout_row(run: _Run) -> CheckResult:
    if not run.stdout:
        return CheckResult("stdout clean", "pass", "nothing written to stdout while coding")
    where = "; ".join(f"{len(data)} bytes in {check} ({data[:40]!r})" for check, data in run.stdout.items())
    return CheckResult("stdout clean", "fail", f"codec {run.name!r} writes to stdout, which breaks piping: {where}")


def check_codec(codec: Codec | str, params: dict[str, Any] | None = None, *, quality: Quality | None = None,
                qualities: int = 4, max_images: int | None = None, timeout: float = 300.0) -> ConformanceReport:
    """Run every check of :data:`CHECKS` on ``codec`` (an instance, or a registered name built with ``params``).

    ``quality``: the quality of the round trip, determinism, corruption and odd-size checks (default: the
    middle of the range); ``qualities``: how many qualities the rate check spreads over the range (at least
    2); ``max_images``: how many sample images the round trip codes (default all 8); ``timeout``: seconds
    each check may take. Bad arguments and an unknown or unavailable codec raise a VcmError naming them.
    """
    if isinstance(codec, str):
        codec = get_codec(codec, **(params or {}))
    elif params:
        raise InputError("check_codec: give params only with a codec name, not with a codec instance")
    if qualities < 2:
        raise InputError(f"qualities {qualities}: the rate check needs at least 2 qualities")
    if max_images is not None and max_images < 1:
        raise InputError(f"max_images {max_images}: at least one sample image is needed")
    if not timeout > 0:
        raise InputError(f"timeout {timeout}: the time limit of a check must be positive (seconds)")
    codec.require_available()
    quality = _mid_quality(codec.quality_range) if quality is None else \
        codec.quality_range.validate(quality, codec.name)
    images = sample_images(max_images)
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="vcm-check-codec-") as workdir:
        run = _Run(codec, images, quality, qualities, timeout, Path(workdir))
        hung = None
        for check, func in tqdm(_CHECK_FUNCTIONS, desc=f"check-codec {codec.name}", unit="check", leave=False,
                                disable=None):
            if hung is not None:
                results.append(CheckResult(check, "not run", f"codec {codec.name!r} hung in the {hung!r} check"))
                continue
            result, did_hang = _run_check(run, check, func)
            logger.debug("codec %r: %s %s (%.1f s)", codec.name, check, result.status, result.seconds)
            results.append(result)
            hung = check if did_hang else None
        results.append(_stdout_row(run))
    timed = run.megapixels > 0
    return ConformanceReport(
        codec=codec.name, params=codec.params(), quality=quality, checks=tuple(results), images=run.timed_images,
        megapixels=run.megapixels, encode_ms_per_mp=1000 * run.encode_s / run.megapixels if timed else None,
        decode_ms_per_mp=1000 * run.decode_s / run.megapixels if timed else None)
