"""The codec contract: :class:`Bitstream`, :class:`QualityRange` and :class:`Codec`.

Third-party codecs subclass :class:`Codec`, implement ``_encode`` and ``_decode``, and
register themselves through the ``vcm_plugin.codecs`` entry-point group. The base class
validates inputs, quality and outputs, so every codec reports bad inputs the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json
import math
import struct
import sys
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np

from vcm_plugin.errors import (
    BitstreamFormatError,
    CodecUnavailableError,
    DecodeError,
    EncodeError,
    InvalidImageError,
    QualityError,
    VcmError,
)
from vcm_plugin.hashing import cached_file_sha256

Quality = int | float

_MAGIC = b"VCMBS"
#: Version written by :meth:`Bitstream.to_bytes`; :meth:`Bitstream.from_bytes` reads every one of
#: ``_READABLE_VERSIONS``.
_FORMAT_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
# magic, version, codec-name length, quality kind (i=int, f=float), quality, height,
# width, payload length; version 2 on: the length of the codec parameters; version 3 on:
# the length of the side information; then the codec name, (version 2 on) the codec
# parameters as UTF-8 JSON (an object, or null when unknown), (version 3 on) the side
# information, the payload, and the CRC-32 of everything before it.
_HEADER = struct.Struct(">5sBHcdIIQ")
_HEADER_V2 = struct.Struct(">5sBHcdIIQI")
_HEADER_V3 = struct.Struct(">5sBHcdIIQII")


@dataclass(frozen=True)
class Bitstream:
    """A coded picture: every byte a decoder needs, plus what made it.

    ``data`` is the complete stream the decoder consumes, including any header the
    codec adapter adds (e.g. the original size), so ``num_bits`` is an honest rate.
    ``height`` and ``width`` are those of the ORIGINAL image, in pixels.

    ``params`` is the configuration of the codec that made the stream (its
    :meth:`Codec.decoder_params`, set by :meth:`Codec.make_bitstream`; ``None`` when unknown).
    It is not part of the coded picture: it says how to build the decoder (e.g. the
    ``matrix`` and ``range`` a VVC stream was converted with), like the configuration
    of a codec's decoder in a system, and is stored in ``.vcmb`` files (format version 2)
    so that ``vcm decode`` builds the same codec. It is excluded from equality and
    hashing and never counted in the rate.

    ``side_info`` is what a decoder needs but a codec's mode sends out of band, outside the
    rate (empty for every codec by default; ``fcm-vvc`` in ``mode: ctc`` puts the tensor
    sizes there, as the MPEG FCM anchor does): it is stored and reported
    (:attr:`side_info_bits`), never counted in :attr:`num_bits`.

    ``estimated_bits`` is NOT the rate: a learned codec's estimate of the stream's size from
    its entropy model (-sum log2 of the likelihoods of its forward pass on the same input,
    as CompressAI's ``compute_bpp``), in bits, reported beside the real rate so the gap is
    visible; ``None`` for codecs without one. Excluded from equality, not stored in ``.vcmb`` files.

    ``front_s`` is NOT part of the coded picture either: the seconds the encode that made the stream
    spent running a task model's front (image -> cut point, ``TaskModel.front``, timed by
    :func:`front_timer`), a part of the encoder's time that the harness stores apart (the
    results store's ``front_s``, the CTTC template's ``nn_part_1``); set by :meth:`Codec.encode`
    for codecs that code a cut point's value (``fcm-vvc``, ``feature-learned``), ``None`` when no
    front ran (image codecs, ``direct``) and for a stream read back from a file. A measurement, not
    data: excluded from equality and hashing, never in :attr:`num_bits`, ``.vcmb`` files or unit keys.
    """

    data: bytes
    codec: str
    quality: Quality
    height: int
    width: int
    params: dict[str, Any] | None = field(default=None, compare=False)
    side_info: bytes = b""
    estimated_bits: float | None = field(default=None, compare=False)
    front_s: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.data, (bytes, bytearray)):
            raise TypeError(f"Bitstream.data must be bytes, not {type(self.data).__name__}")
        if not isinstance(self.side_info, (bytes, bytearray)):
            raise TypeError(f"Bitstream.side_info must be bytes, not {type(self.side_info).__name__}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"Bitstream of codec {self.codec!r}: size {self.width}x{self.height} is not positive")

    @property
    def num_bits(self) -> int:
        """Size of ``data`` in bits: the rate (neither ``params`` nor the ``.vcmb`` wrapper of :meth:`to_bytes`)."""
        return 8 * len(self.data)

    @property
    def side_info_bits(self) -> int:
        """Size of ``side_info`` in bits: what the decoder needs beyond the rate (0 for a self-contained stream)."""
        return 8 * len(self.side_info)

    @property
    def num_pixels(self) -> int:
        """Pixels of the original image."""
        return self.height * self.width

    @property
    def bpp(self) -> float:
        """Bits per pixel of the ORIGINAL image."""
        return self.num_bits / self.num_pixels

    def to_bytes(self) -> bytes:
        """Serialize to the self-describing ``.vcmb`` file format (version 3, with a CRC-32).

        The file wraps ``data`` for storage, with the codec name, ``params`` (JSON;
        a value JSON cannot represent is stored as its ``str``) and ``side_info``; the
        wrapper is not part of the rate.
        """
        name = self.codec.encode("utf-8")
        kind = b"i" if isinstance(self.quality, (int, np.integer)) else b"f"
        try:
            params = json.dumps(self.params, sort_keys=True, default=str).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise BitstreamFormatError(f"bitstream of codec {self.codec!r}: parameters {self.params!r} cannot be "
                                       f"stored as JSON ({exc})") from exc
        header = _HEADER_V3.pack(
            _MAGIC, _FORMAT_VERSION, len(name), kind, float(self.quality),
            self.height, self.width, len(self.data), len(params), len(self.side_info),
        )
        body = header + name + params + bytes(self.side_info) + bytes(self.data)
        return body + struct.pack(">I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, blob: bytes, source: str = "bitstream") -> Bitstream:
        """Parse :meth:`to_bytes` output; ``source`` names the input in errors."""
        if len(blob) < _HEADER.size + 4 or not blob.startswith(_MAGIC):
            raise BitstreamFormatError(f"{source}: not a vcm-plugin bitstream file (bad magic or too short)")
        magic, version, name_len, kind, quality, height, width, size = _HEADER.unpack_from(blob)
        if version not in _READABLE_VERSIONS:
            raise BitstreamFormatError(f"{source}: unsupported bitstream format version {version} "
                                       f"(this vcm-plugin reads versions {', '.join(map(str, _READABLE_VERSIONS))})")
        header_size, params_len, side_len = _HEADER.size, 0, 0
        if version >= 2:
            struct_ = _HEADER_V3 if version >= 3 else _HEADER_V2
            if len(blob) < struct_.size + 4:
                raise BitstreamFormatError(f"{source}: not a vcm-plugin bitstream file (too short)")
            header_size, params_len = struct_.size, struct_.unpack_from(blob)[8]
            side_len = struct_.unpack_from(blob)[9] if version >= 3 else 0
        offset = header_size + name_len
        expected = offset + params_len + side_len + size + 4
        if len(blob) != expected:
            raise BitstreamFormatError(
                f"{source}: truncated or padded file ({len(blob)} bytes, header says {expected})"
            )
        (crc,) = struct.unpack_from(">I", blob, len(blob) - 4)
        if zlib.crc32(blob[:-4]) != crc:
            raise BitstreamFormatError(f"{source}: CRC-32 mismatch, the file is corrupt")
        name = blob[header_size:offset].decode("utf-8", errors="replace")
        params: dict[str, Any] | None = None
        if version >= 2:
            try:
                params = json.loads(blob[offset : offset + params_len].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BitstreamFormatError(f"{source}: the codec parameters are not valid JSON ({exc})") from None
            if params is not None and not isinstance(params, dict):
                raise BitstreamFormatError(f"{source}: the codec parameters are not a JSON object")
        side_info = blob[offset + params_len : offset + params_len + side_len]
        data = blob[offset + params_len + side_len : -4]
        q: Quality = int(quality) if kind == b"i" else float(quality)
        try:
            return cls(data=bytes(data), codec=name, quality=q, height=height, width=width, params=params,
                       side_info=bytes(side_info))
        except ValueError as exc:
            raise BitstreamFormatError(f"{source}: {exc}") from exc


#: The task-model front seconds of the :meth:`Codec.encode` in progress in this context (a list that
#: :func:`front_timer` adds to); None outside an encode.
_FRONT_SECONDS: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("vcm_front_seconds",
                                                                                   default=None)


@contextlib.contextmanager
def front_timer() -> Iterator[None]:
    """Time a task model's front (image -> cut point) run inside :meth:`Codec.encode`: its seconds become the
    bitstream's :attr:`Bitstream.front_s`. ``TaskModel.front`` runs under it, so a codec that calls
    ``model.front(cut, image)`` in its ``_encode`` reports its front without a line of its own (and its module,
    part of its unit keys, does not change); outside an encode (or in another thread) it times nothing."""
    seconds = _FRONT_SECONDS.get()
    if seconds is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds.append(time.perf_counter() - start)


@dataclass(frozen=True)
class QualityRange:
    """The quality parameter of a codec: its name, inclusive range and direction."""

    name: str
    minimum: Quality
    maximum: Quality
    higher_is_more_bits: bool
    integer: bool = True
    description: str = ""

    def validate(self, quality: Any, codec: str) -> Quality:
        """Return ``quality`` as the right number type or raise :class:`QualityError`."""
        if isinstance(quality, bool) or not isinstance(quality, (int, float, np.integer, np.floating)):
            raise QualityError(f"codec {codec!r}: {self.name} must be a number, got {quality!r}")
        if not math.isfinite(float(quality)):
            raise QualityError(f"codec {codec!r}: {self.name} must be finite, got {quality!r}")
        if self.integer and float(quality) != int(quality):
            raise QualityError(f"codec {codec!r}: {self.name} must be an integer, got {quality!r}")
        if not self.minimum <= quality <= self.maximum:
            raise QualityError(
                f"codec {codec!r}: {self.name} {quality!r} is outside {self.minimum}..{self.maximum}"
            )
        return int(quality) if self.integer else float(quality)

    def __str__(self) -> str:
        direction = "higher = more bits" if self.higher_is_more_bits else "lower = more bits"
        return f"{self.name} {self.minimum}..{self.maximum} ({direction})"


@dataclass(frozen=True)
class Availability:
    """Whether a codec can run here; falsy with a ``reason`` when it cannot."""

    available: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.available


def validate_image(image: Any, codec: str) -> np.ndarray:
    """Check that ``image`` is an (H, W, 3) uint8 RGB array; return it C-contiguous."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"codec {codec!r}: image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidImageError(
            f"codec {codec!r}: image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"codec {codec!r}: image has zero size {image.shape}")
    return np.ascontiguousarray(image)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


@functools.cache
def distribution_of(module: str) -> str:
    """``"name version"`` of the installed distribution(s) holding ``module``; ``"no distribution"`` if none."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in sorted(set(_distributions().get(module.partition(".")[0], []))):
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            found.append(f"{dist} ?")
    return ", ".join(found) or "no distribution"


def source_sha256(module: str) -> str:
    """SHA-256 of the source file of ``module`` (cached per file state); ``"no source"`` when it has none."""
    try:
        path = inspect.getsourcefile(sys.modules[module])
        return cached_file_sha256(path) if path else "no source"
    except (KeyError, TypeError, OSError):
        return "no source"


def implementation_identity(cls: type) -> str:
    """The default :meth:`Codec.version` of ``cls``: what identifies its code.

    The class path, vcm-plugin's version, the name and version of the distribution that
    ships the class's module (a plug-in package), and the SHA-256 of the source file of
    every module defining a :class:`Codec` subclass in its MRO (the class's own module
    first), so that an edited or rebuilt codec recomputes stored results.
    """
    from vcm_plugin._version import __version__

    modules = dict.fromkeys(k.__module__ for k in cls.__mro__
                            if isinstance(k, type) and issubclass(k, Codec) and k is not Codec)
    sources = " ".join(f"{m}:{source_sha256(m)[:16]}" for m in modules)
    return (f"{cls.__module__}.{cls.__qualname__} vcm-plugin {__version__} "
            f"[{distribution_of(cls.__module__)}] source {sources}")


#: The built-in codecs' scheduling hints, by name: (:attr:`Codec.one_thread`, :attr:`Codec.relative_cost`).
#: Written here, not in each codec's module, because a codec module's source is part of its unit keys
#: (:func:`implementation_identity`): a hint changes no stream and must not recompute stored units.
#: ``threads: 1`` gives the bytes of the default threads for libvvenc, x265 and libjxl, not for libaom
#: (AV1 codes other bits on one thread), so av1 has none; compressai's torch threads are the workers' already.
BUILTIN_HINTS: dict[str, tuple[dict[str, Any], float]] = {
    "jpeg": ({}, 1.0), "webp": ({}, 25.0), "jxl": ({"threads": 1}, 50.0), "hevc": ({"threads": 1}, 50.0),
    "av1": ({}, 300.0), "vvc": ({"threads": 1}, 1000.0), "compressai": ({}, 100.0), "vtm": ({}, 20000.0),
}


@dataclass
class Codec(ABC):
    """Base class of every codec.

    Subclasses set ``name`` and ``quality_range`` and implement :meth:`_encode` and
    :meth:`_decode`; constructor keyword arguments are the codec's parameters and are
    returned by :meth:`params` (they identify a codec configuration in result stores).
    ``output_point`` is ``"input"`` for image codecs: ``decode`` returns an image.

    ``quality_range`` is set on the class; an instance whose parameters allow fewer
    qualities (a learned model trained at 4 rates where its class allows 8) sets its own
    in ``__post_init__``. Read it from the instance (``codec.quality_range``), as the base
    class, the config loader and the harness do; the class value is the default.
    """

    name: ClassVar[str]
    quality_range: ClassVar[QualityRange]  # the class default; an instance may narrow it (see above)
    output_point: ClassVar[str] = "input"
    #: Parameters that say where and how fast this machine runs the codec (executables,
    #: threads, time limits, weight search paths), not how a stream is decoded: they are
    #: left out of :attr:`Bitstream.params`, so a ``.vcmb`` file decodes on another machine.
    machine_params: ClassVar[frozenset[str]] = frozenset(
        {"ffmpeg", "encoder", "decoder", "threads", "timeout", "search_path", "download"})
    #: Machine parameters that make the codec run on one thread WITHOUT changing its streams or
    #: pictures (e.g. ``{"threads": 1}``; ``tests/test_jobs.py`` checks the bytes). The worker
    #: processes of ``vcm run --jobs N`` (N > 1) and of Dask use them unless the config sets the
    #: parameter; unit keys are computed without them. ``None``: the value in :data:`BUILTIN_HINTS`
    #: for a built-in codec, else none (``{}``); see :meth:`one_thread_params`.
    one_thread: ClassVar[dict[str, Any] | None] = None
    #: Rough CPU time per pixel relative to JPEG (1) at a middle quality, for ordering work: the harness
    #: hands its workers the costliest units first. ``None``: :data:`BUILTIN_HINTS`, else 10.
    relative_cost: ClassVar[float | None] = None

    # -- the contract ----------------------------------------------------------------
    def encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        """Encode an (H, W, 3) uint8 RGB image at ``quality``; return the whole stream.

        The seconds spent in task-model fronts during ``_encode`` (:func:`front_timer`) are returned as the
        stream's :attr:`Bitstream.front_s` (unless ``_encode`` set it), never in its bytes.
        """
        image = validate_image(image, self.name)
        quality = self.quality_range.validate(quality, self.name)
        self.require_available()
        fronts: list[float] = []
        token = _FRONT_SECONDS.set(fronts)
        try:
            bitstream = self._encode(image, quality)
        except VcmError:
            raise
        except Exception as exc:  # a library or subprocess failure: name the codec
            raise EncodeError(f"codec {self.name!r} failed to encode a {image.shape[1]}x{image.shape[0]} image "
                              f"at {self.quality_range.name} {quality}: {exc}") from exc
        finally:
            _FRONT_SECONDS.reset(token)
            outer = _FRONT_SECONDS.get()
            if outer is not None:  # an encode inside another codec's encode: its fronts are the outer's too
                outer.extend(fronts)
        if bitstream.height != image.shape[0] or bitstream.width != image.shape[1]:
            raise EncodeError(f"codec {self.name!r} returned a bitstream with the wrong original size")
        if fronts and bitstream.front_s is None:
            bitstream = replace(bitstream, front_s=sum(fronts))
        return bitstream

    def decode(self, bitstream: Bitstream) -> np.ndarray:
        """Decode a bitstream of this codec to an (H, W, 3) uint8 RGB image."""
        if not isinstance(bitstream, Bitstream):
            raise DecodeError(f"codec {self.name!r}: expected a Bitstream, got {type(bitstream).__name__}")
        if bitstream.codec != self.name:
            raise DecodeError(f"codec {self.name!r} cannot decode a bitstream made by codec {bitstream.codec!r}")
        if not bitstream.data:
            raise DecodeError(f"codec {self.name!r}: empty bitstream")
        self.require_available()
        try:
            image = self._decode(bitstream)
        except VcmError:
            raise
        except Exception as exc:
            raise DecodeError(f"codec {self.name!r}: corrupt or truncated bitstream ({exc})") from exc
        return self._check_decoded(image, bitstream)

    def _check_decoded(self, image: Any, bitstream: Bitstream) -> Any:
        """The decoder's output if it is what :attr:`output_point` takes: here an (H, W, 3) uint8 picture of
        the original size (a codec decoding to a cut point checks its cut value instead)."""
        expected = (bitstream.height, bitstream.width, 3)
        if not isinstance(image, np.ndarray) or image.shape != expected or image.dtype != np.uint8:
            got = getattr(image, "shape", type(image).__name__)
            raise DecodeError(f"codec {self.name!r}: decoded picture is {got}, expected {expected}")
        return image

    @abstractmethod
    def _encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        """Encode a validated image at a validated quality."""

    @abstractmethod
    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        """Decode; raise any exception on a damaged stream (the base names the codec)."""

    # -- availability and identity ---------------------------------------------------
    def is_available(self) -> Availability:
        """Whether this codec can run here; override to check binaries or libraries."""
        return Availability(True)

    def require_available(self) -> None:
        """Raise :class:`~vcm_plugin.errors.CodecUnavailableError` with the reason."""
        availability = self.is_available()
        if not availability:
            raise CodecUnavailableError(f"codec {self.name!r} is not available: {availability.reason}")

    def check_ready(self, quality: Quality) -> None:
        """Raise now if coding at ``quality`` cannot work here (missing binary, library or weights file).

        The harness calls it for every codec point before any work, so a run stops at
        once with the reason instead of failing every image. Cheap: nothing is loaded.
        """
        self.quality_range.validate(quality, self.name)
        self.require_available()

    def weights_identity(self, quality: Quality) -> str | None:
        """What identifies the trained weights used at ``quality`` (e.g. a SHA-256), for learned codecs.

        Part of result-store keys when not ``None``; must be cheap (hash a file, do not load it).
        """
        return None

    def version(self) -> str:
        """What identifies the implementation; part of result-store keys (see :func:`implementation_identity`).

        Overrides must start from ``super().version()`` and add the library or binary
        version that does the coding, so that upgrading it recomputes stored results.
        """
        return implementation_identity(type(self))

    @classmethod
    def one_thread_params(cls) -> dict[str, Any]:
        """:attr:`one_thread`, or the built-in codec's (:data:`BUILTIN_HINTS`), or ``{}``."""
        if cls.one_thread is not None:
            return dict(cls.one_thread)
        return dict(BUILTIN_HINTS.get(getattr(cls, "name", ""), ({}, None))[0])

    @classmethod
    def cost_per_pixel(cls) -> float:
        """:attr:`relative_cost`, or the built-in codec's (:data:`BUILTIN_HINTS`), or 10."""
        if cls.relative_cost is not None:
            return float(cls.relative_cost)
        return float(BUILTIN_HINTS.get(getattr(cls, "name", ""), ({}, 10.0))[1] or 10.0)

    def params(self) -> dict[str, Any]:
        """The codec's configuration (constructor parameters), JSON-serialisable."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def decoder_params(self) -> dict[str, Any]:
        """:meth:`params` without :attr:`machine_params`: what a decoder elsewhere must be built with."""
        return {k: v for k, v in self.params().items() if k not in self.machine_params}

    def make_bitstream(self, data: bytes, quality: Quality, image: np.ndarray, side_info: bytes = b"",
                       estimated_bits: float | None = None, front_s: float | None = None) -> Bitstream:
        """Wrap coded bytes for ``image`` (helper for subclasses); records :meth:`decoder_params`; ``side_info``:
        what this codec's mode sends out of band (not in the rate); ``estimated_bits``: a learned codec's
        likelihood estimate of the size, bits (not the rate, see :class:`Bitstream`); ``front_s``: seconds of a
        task-model front the codec timed itself (default: :meth:`encode` fills it from :func:`front_timer`)."""
        return Bitstream(data=bytes(data), codec=self.name, quality=quality, height=int(image.shape[0]),
                         width=int(image.shape[1]), params=self.decoder_params(), side_info=bytes(side_info),
                         estimated_bits=estimated_bits, front_s=front_s)
