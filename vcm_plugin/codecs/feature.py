"""Codecs for split inference: the decoder returns a task model's value at a cut point, not an image.

:class:`FeatureCodec` runs the named task model's front part (``model.front(cut, image)``)
inside ``encode`` and codes the resulting tensors; ``decode`` returns the value the task
model's ``run_from(cut, value)`` takes, and the harness scores it with the same evaluator
as image codecs (``output_point`` is the cut). Rates stay honest: the whole bitstream over
the pixels of the INPUT image.

``fcm-vvc`` is the FCM-style baseline (model splitting): every tensor of the cut value is
quantised to 10 bits with its own min/max (float32 in the header), its channels tiled
into one monochrome frame (:mod:`vcm_plugin.features.tiling`) and coded as a VVC intra
picture by libvvenc at the QP given as quality (:mod:`vcm_plugin.features.vvc_frames`).
Header: version, value kind (plain tensor, or YOLOv5 features with their layer), then per
tensor its key, shape, range and stream length (LEB128 varints, float32 ranges).
"""

from __future__ import annotations

import struct
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from vcm_plugin.codecs.base import Availability, Bitstream, Codec, Quality, QualityRange, validate_image
from vcm_plugin.codecs.registry import register_codec
from vcm_plugin.errors import BitstreamFormatError, DecodeError, EncodeError, VcmError
from vcm_plugin.varint import ByteReader, encode_varint

_VERSION = 1
_KIND_TENSOR, _KIND_YOLO = 0, 1


@dataclass
class FeatureCodec(Codec):
    """Base of codecs whose decoded value enters ``task_model`` at cut point ``cut``."""

    task_model: str = "yolov5"
    task_params: dict[str, Any] = field(default_factory=dict)
    cut: str = "backbone"
    search_path: list[str] | None = None

    @property
    def output_point(self) -> str:  # type: ignore[override]
        return self.cut

    def model(self):
        """The task model whose front computes the coded value (built once)."""
        if getattr(self, "_model", None) is None:
            from vcm_plugin.tasks.registry import get_task_model, get_task_model_class

            params = dict(self.task_params)
            fields = getattr(get_task_model_class(self.task_model), "__dataclass_fields__", {})
            if self.search_path and "search_path" in fields and "search_path" not in params:
                params["search_path"] = list(self.search_path)
            self._model = get_task_model(self.task_model, **params)
        return self._model

    def encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        image = validate_image(image, self.name)
        quality = self.quality_range.validate(quality, self.name)
        self.require_available()
        try:
            value = self.model().front(self.cut, image)
            data = self._encode_value(value, quality)
        except VcmError:
            raise
        except Exception as exc:
            raise EncodeError(f"codec {self.name!r} failed to code the {self.task_model} features at "
                              f"{self.cut!r} of a {image.shape[1]}x{image.shape[0]} image: {exc}") from exc
        return self.make_bitstream(data, quality, image)

    def decode(self, bitstream: Bitstream) -> Any:  # type: ignore[override]
        if not isinstance(bitstream, Bitstream) or bitstream.codec != self.name or not bitstream.data:
            raise DecodeError(f"codec {self.name!r}: not a non-empty bitstream of this codec")
        self.require_available()
        try:
            return self._decode_value(bitstream)
        except VcmError:
            raise
        except Exception as exc:
            raise DecodeError(f"codec {self.name!r}: corrupt or truncated bitstream ({exc})") from exc

    @abstractmethod
    def _encode_value(self, value: Any, quality: Quality) -> bytes: ...

    @abstractmethod
    def _decode_value(self, bitstream: Bitstream) -> Any: ...

    def _encode(self, image: np.ndarray, quality: Quality) -> Bitstream:  # pragma: no cover - encode overrides
        raise NotImplementedError

    def _decode(self, bitstream: Bitstream) -> np.ndarray:  # pragma: no cover - decode overrides
        raise NotImplementedError


def _tensors_of(value: Any) -> tuple[int, int, list[tuple[int, Any]]]:
    """(kind, layer, [(key, tensor)]) of a cut value: a tensor, or YOLOv5 features."""
    import torch

    if isinstance(value, torch.Tensor):
        return _KIND_TENSOR, 0, [(0, value)]
    if isinstance(getattr(value, "tensors", None), dict):
        return _KIND_YOLO, int(value.layer), sorted(value.tensors.items())
    raise EncodeError(f"cannot code a cut value of type {type(value).__name__}")


@register_codec
@dataclass
class FcmVvcCodec(FeatureCodec):
    """FCM-style baseline: 10-bit per-tensor quantisation, channel tiling, VVC intra (QP 0..63)."""

    name: ClassVar[str] = "fcm-vvc"
    quality_range: ClassVar[QualityRange] = QualityRange(
        "qp", 0, 63, higher_is_more_bits=False, description="VVC QP of the feature frame")

    preset: str = "medium"
    threads: int = 1
    ffmpeg: str | None = None

    def is_available(self) -> Availability:
        from vcm_plugin.ffmpeg import ffmpeg_decoders, ffmpeg_encoders, find_ffmpeg

        exe = find_ffmpeg(self.ffmpeg)
        if exe is None or "libvvenc" not in ffmpeg_encoders(exe) or "vvc" not in ffmpeg_decoders(exe):
            return Availability(False, "needs an ffmpeg with libvvenc and the vvc decoder (imageio-ffmpeg's has both)")
        return Availability(True)

    def _encode_value(self, value: Any, quality: Quality) -> bytes:
        from vcm_plugin.features.tiling import quantise, tile
        from vcm_plugin.features.vvc_frames import encode_frame

        kind, layer, items = _tensors_of(value)
        out = bytearray([_VERSION, kind]) + encode_varint(layer) + encode_varint(len(items))
        for key, tensor in items:
            array = tensor.detach().float().cpu().numpy()
            if array.ndim != 4 or array.shape[0] != 1:
                raise EncodeError(f"feature tensor {key} has shape {array.shape}, expected (1, C, h, w)")
            q = quantise(array[0])
            frame = tile(q.samples, 512)
            stream = encode_frame(frame, int(quality), self.preset, self.threads, self.ffmpeg)
            out += encode_varint(key) + b"".join(encode_varint(d) for d in array.shape[1:])
            out += struct.pack(">ff", q.low, q.high) + encode_varint(len(stream)) + stream
        return bytes(out)

    def _decode_value(self, bitstream: Bitstream) -> Any:
        import torch

        from vcm_plugin.features.tiling import Quantised, dequantise, grid, untile
        from vcm_plugin.features.vvc_frames import decode_frame

        source = f"codec {self.name!r} bitstream"
        reader = ByteReader(bitstream.data, source)
        version, kind = reader.take(2, "header")
        if version != _VERSION or kind not in (_KIND_TENSOR, _KIND_YOLO):
            raise BitstreamFormatError(f"{source}: unknown version {version} or value kind {kind}")
        layer, count = reader.varint("layer"), reader.varint("tensor count")
        if count > 64:
            raise BitstreamFormatError(f"{source}: implausible tensor count {count}")
        tensors = {}
        for _ in range(count):
            key = reader.varint("key")
            channels, h, w = (reader.varint("shape") for _ in range(3))
            low, high = struct.unpack(">ff", reader.take(8, "range"))
            stream = reader.take(reader.varint("stream length"), "stream")
            rows, cols = grid(channels)
            frame = decode_frame(stream, rows * h, cols * w, self.ffmpeg)
            values = dequantise(Quantised(untile(frame, channels, h, w), low, high))
            tensors[key] = torch.from_numpy(values).unsqueeze(0)
        if reader.pos != len(reader.data):
            raise BitstreamFormatError(f"{source}: trailing bytes after the last tensor")
        if kind == _KIND_TENSOR:
            return tensors[0]
        from vcm_plugin.tasks.yolov5.detector import YoloFeatures

        return YoloFeatures(tensors, layer, (bitstream.height, bitstream.width))
