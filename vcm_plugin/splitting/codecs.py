"""Task-aware codecs: the decoder returns a task model's value at a cut point, not an image.

Their ``output_point`` is the cut, so the harness scores the decoded value with the task
model's ``run_from(cut, value)`` and the same evaluator, anchors and BD-rate table as image
codecs. They reach the model only through the split protocol (:mod:`vcm_plugin.tasks.split`:
a :class:`~vcm_plugin.tasks.split.CutValue` of named tensors) and know no model by name.
Rates stay honest: the whole stream over the pixels of the ORIGINAL image, whose size the
decoder takes from the :class:`~vcm_plugin.codecs.base.Bitstream` (the value's ``image_hw``).

* ``fcm-vvc``, the FCM-style baseline (model splitting): the encoder runs the model's front
  to the cut; every tensor of the value is quantised to 10 bits with its own min/max
  (float32 in the header), its channels tiled into one monochrome frame
  (:mod:`vcm_plugin.features.tiling`) and coded as a VVC intra picture by libvvenc at the
  QP given as quality (:mod:`vcm_plugin.features.vvc_frames`). Stream: version, tensor
  count, then per tensor its name, shape, range and stream length, then the geometry
  entries other than ``image_hw`` (name and integers); LEB128 varints, UTF-8 names.
* ``direct`` (direct coding): the encoder sees only the image, at the task model's own input
  geometry (resize / letterbox, a deterministic function of X): it never runs the task
  model. The latent decoder outputs Ŷ1.
* ``feature-learned`` (model splitting): the encoder runs the model's front part to Y1 and
  codes Y1.

The learned codecs' ``checkpoint`` is an export of ``vcm train direct|feature`` (``{quality}``
in the path selects one file per quality: quality k is the k-th trained lambda); a relative
path is taken from the working directory, else searched in the weights search path. The
export is bound to a task model's weights and cut point; a codec configured for another
one refuses it, naming both. Stream: version, paradigm, a 4-byte tag of the checkpoint file
(a stream made with other weights is refused), Y1 (h, w), latent (h, w), then each rANS
string with its length (LEB128 varints).
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from vcm_plugin.codecs.base import Availability, Bitstream, Codec, Quality, QualityRange
from vcm_plugin.codecs.registry import modules_installed, register_codec
from vcm_plugin.codecs.vvc import VVCCodec
from vcm_plugin.errors import BitstreamFormatError, DecodeError, EncodeError
from vcm_plugin.learned.models import likelihood_bits
from vcm_plugin.splitting.adapter import split_adapter
from vcm_plugin.tasks.registry import get_task_model, get_task_model_class
from vcm_plugin.tasks.split import CutValue
from vcm_plugin.varint import ByteReader, encode_varint
from vcm_plugin.weights import file_sha256, find_weights, with_search_path

_FCM_VERSION = 2
_FCM_CTC_VERSION = 3  # the side information of mode 'ctc'
_VERSION = 1
_PARADIGMS = {"direct": 0, "feature": 1}


@dataclass
class FeatureCodec(Codec):
    """Base of codecs whose decoded :class:`CutValue` enters ``task_model`` at cut point ``cut``."""

    task_model: str = "yolov5"
    task_params: dict[str, Any] = field(default_factory=dict)
    cut: str = "backbone"
    search_path: list[str] | None = None

    @property
    def output_point(self) -> str:  # type: ignore[override]
        return self.cut

    def model(self) -> Any:
        """The task model whose front computes the coded value (built once)."""
        if getattr(self, "_model", None) is None:
            params = with_search_path(get_task_model_class(self.task_model), self.task_params, self.search_path)
            self._model = get_task_model(self.task_model, **params)
        return self._model

    def _check_decoded(self, value: Any, bitstream: Bitstream) -> CutValue:
        """A :class:`CutValue` with exactly the tensors of the cut, else an error naming both sets."""
        if not isinstance(value, CutValue):
            raise DecodeError(f"codec {self.name!r}: decoded a {type(value).__name__}, not a CutValue")
        expected = self.model().adapter().names(self.cut)
        if sorted(value.tensors) != sorted(expected):
            raise BitstreamFormatError(
                f"codec {self.name!r} bitstream: its header packs tensors {list(value.tensors)}, but cut point "
                f"{self.cut!r} of task model {self.task_model!r} has tensors {expected} (a stream made for "
                "another model or cut)")
        return value


def _name(reader: ByteReader) -> str:
    return reader.take(reader.varint("name length"), "name").decode("utf-8")


def _encode_name(name: str) -> bytes:
    data = name.encode("utf-8")
    return encode_varint(len(data)) + data


@register_codec
@dataclass
class FcmVvcCodec(FeatureCodec):
    """FCM-style baseline: 10-bit quantisation, channel tiling, VVC intra (QP 0..63); ``mode`` ``full`` or ``ctc``.

    ``full`` (default): one frame per tensor over its own min/max; everything a decoder needs is in the stream.
    ``ctc``: as the MPEG FCM anchor, every tensor over the dataset-global ``value_range`` (low, high; values
    outside clipped) packed into ONE frame (:func:`~vcm_plugin.features.tiling.pack`); the stream is that VVC
    picture alone, the tensor names and sizes go out of band (:attr:`Bitstream.side_info`, reported, not in
    the rate).
    """

    name: ClassVar[str] = "fcm-vvc"
    quality_range: ClassVar[QualityRange] = replace(VVCCodec.quality_range, description="VVC QP of the feature frame")

    preset: str = "medium"
    threads: int = 1
    ffmpeg: str | None = None
    timeout: float = 300.0  # seconds per ffmpeg call (one frame's encode or decode); not part of the stream
    mode: Literal["full", "ctc"] = "full"
    value_range: list[float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("full", "ctc"):
            raise ValueError(f"fcm-vvc mode {self.mode!r} is not 'full' or 'ctc'")
        if self.mode == "ctc":
            r = self.value_range
            if r is None or len(r) != 2 or not float(r[0]) < float(r[1]):
                raise ValueError(f"fcm-vvc mode 'ctc' needs value_range: [low, high] with low < high (the "
                                 f"dataset-global feature range the FCM anchor quantises with), got {r!r}")
        elif self.value_range is not None:
            raise ValueError("fcm-vvc value_range applies to mode 'ctc' only (mode 'full' codes each tensor over "
                             "its own range)")

    def is_available(self) -> Availability:
        """The frames are coded by libvvenc and decoded by ffmpeg's vvc decoder, as by the ``vvc`` codec."""
        return VVCCodec(ffmpeg=self.ffmpeg).is_available()

    def _encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        from vcm_plugin.features.tiling import pack, quantise, tile
        from vcm_plugin.features.vvc_frames import MID_GREY, encode_frame

        value = self.model().front(self.cut, image)
        arrays = {}
        for key, tensor in value.tensors.items():
            array = tensor.detach().float().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
            if array.ndim != 4 or array.shape[0] != 1:
                raise EncodeError(f"feature tensor {key!r} has shape {array.shape}, expected (1, C, h, w)")
            arrays[key] = array[0]
        header = bytearray([_FCM_VERSION if self.mode == "full" else _FCM_CTC_VERSION]) + encode_varint(len(arrays))
        if self.mode == "ctc":
            frame = pack([quantise(a, value_range=self.value_range).samples for a in arrays.values()], MID_GREY)
            stream = encode_frame(frame, int(quality), self.preset, self.threads, self.ffmpeg, self.timeout)
            for key, array in arrays.items():
                header += _encode_name(key) + b"".join(encode_varint(d) for d in array.shape)
            side_info = bytes(header + _encode_geometry(value))
            return self.make_bitstream(stream, quality, image, side_info=side_info)
        for key, array in arrays.items():
            q = quantise(array)
            stream = encode_frame(tile(q.samples, MID_GREY), int(quality), self.preset, self.threads, self.ffmpeg,
                                  self.timeout)
            header += _encode_name(key) + b"".join(encode_varint(d) for d in array.shape)
            header += struct.pack(">ff", q.low, q.high) + encode_varint(len(stream)) + stream
        return self.make_bitstream(bytes(header + _encode_geometry(value)), quality, image)

    def _decode(self, bitstream: Bitstream) -> CutValue:
        import torch

        from vcm_plugin.features.tiling import Quantised, dequantise, grid, packed_size, unpack, untile
        from vcm_plugin.features.vvc_frames import decode_frame

        source = f"codec {self.name!r} bitstream"
        ctc = self.mode == "ctc"
        if ctc and not bitstream.side_info:
            raise BitstreamFormatError(f"{source}: mode 'ctc' needs the out-of-band side information (tensor "
                                       "names and sizes); this stream has none (made in mode 'full'?)")
        reader = ByteReader(bitstream.side_info if ctc else bitstream.data, source)
        version = reader.take(1, "header")[0]
        count = reader.varint("tensor count")
        if version != (_FCM_CTC_VERSION if ctc else _FCM_VERSION) or not 0 < count <= 64:
            raise BitstreamFormatError(f"{source}: version {version} or tensor count {count} does not fit mode "
                                       f"{self.mode!r}")
        tensors, shapes = {}, {}
        for _ in range(count):
            key = _name(reader)
            shapes[key] = channels, h, w = tuple(reader.varint("shape") for _ in range(3))
            if not (0 < channels <= 65536 and 0 < h <= 16384 and 0 < w <= 16384):
                raise BitstreamFormatError(f"{source}: implausible shape {shapes[key]} of tensor {key!r}")
            if ctc:
                continue
            low, high = struct.unpack(">ff", reader.take(8, "range"))
            stream = reader.take(reader.varint("stream length"), "stream")
            rows, cols = grid(channels)
            samples = untile(decode_frame(stream, rows * h, cols * w, self.ffmpeg, self.timeout), channels, h, w)
            tensors[key] = torch.from_numpy(dequantise(Quantised(samples, low, high))).unsqueeze(0)
        geometry = _decode_geometry(reader, bitstream)
        if reader.pos != len(reader.data):
            raise BitstreamFormatError(f"{source}: trailing bytes after the last tensor")
        if ctc:
            height, width = packed_size(list(shapes.values()))
            try:
                frame = decode_frame(bitstream.data, height, width, self.ffmpeg, self.timeout)
            except DecodeError as exc:
                raise BitstreamFormatError(f"{source}: the VVC picture does not hold the {width}x{height} packing of "
                                           f"tensors {shapes} that the side information describes: {exc}") from exc
            low, high = self.value_range  # type: ignore[misc]
            for key, samples in zip(shapes, unpack(frame, list(shapes.values())), strict=True):
                tensors[key] = torch.from_numpy(dequantise(Quantised(samples, float(low), float(high)))).unsqueeze(0)
        return CutValue(tensors, geometry)


def _encode_geometry(value: CutValue) -> bytes:
    """The geometry entries other than ``image_hw`` (the Bitstream's size): count, then name and integers each."""
    extra = {k: v for k, v in value.geometry.items() if k != "image_hw"}
    out = bytearray(encode_varint(len(extra)))
    for key, ints in extra.items():
        out += _encode_name(key) + encode_varint(len(ints)) + b"".join(encode_varint(int(i)) for i in ints)
    return bytes(out)


def _decode_geometry(reader: ByteReader, bitstream: Bitstream) -> dict[str, Any]:
    geometry: dict[str, Any] = {"image_hw": (bitstream.height, bitstream.width)}
    for _ in range(reader.varint("geometry count")):
        key = _name(reader)
        geometry[key] = tuple(reader.varint(key) for _ in range(reader.varint("geometry length")))
    return geometry


@dataclass
class LearnedTaskCodec(FeatureCodec):
    """Base of ``direct`` and ``feature-learned``: a trained :class:`TaskCodecNet` per quality."""

    paradigm: ClassVar[str]
    quality_range: ClassVar[QualityRange] = QualityRange(
        "index", 1, 99, higher_is_more_bits=True, description="which trained checkpoint ({quality} in its path)")

    checkpoint: str = ""
    threads: int | None = None

    _nets: dict[int, tuple[Any, bytes]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _adapter: Any = field(default=None, init=False, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_nets={}, _adapter=None, _lock=None, _model=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def is_available(self) -> Availability:
        found = modules_installed("torch", "compressai", hint="pip install compressai")  # not imported: seconds
        if not found:
            return found
        if not self.checkpoint:
            return Availability(False, f"codec {self.name!r} needs `checkpoint` (an export of `vcm train "
                                       f"{self.paradigm}`)")
        return Availability(True)

    # -- weights -------------------------------------------------------------------------
    def checkpoint_path(self, quality: Quality) -> Path:
        name = str(self.checkpoint).replace("{quality}", str(int(quality)))
        if Path(name).expanduser().is_file():  # a path (relative to the working directory) wins
            return Path(name).expanduser()
        return find_weights(name, self.search_path)

    def check_ready(self, quality: Quality) -> None:
        super().check_ready(quality)
        self.require_available()
        from vcm_plugin.learned.task_checkpoint import TaskCodecCheckpointError, read_task_codec

        path = self.checkpoint_path(quality)
        data = read_task_codec(path)
        if data.get("paradigm") != self.paradigm:
            raise TaskCodecCheckpointError(f"codec {self.name!r}: {str(path)!r} is a {data.get('paradigm')!r} "
                                           f"codec export, not {self.paradigm!r}")
        self._check_binding(path, data.get("binding", {}))

    def _check_binding(self, path: Path, theirs: dict[str, Any]) -> None:
        from vcm_plugin.learned.task_checkpoint import TaskCodecCheckpointError

        if theirs.get("task_model") != self.task_model or theirs.get("cut") != self.adapter().cut:
            raise TaskCodecCheckpointError(
                f"codec {self.name!r}: checkpoint {str(path)!r} was trained for task model "
                f"{theirs.get('task_model')!r} cut {theirs.get('cut')!r}, but the codec is configured for "
                f"{self.task_model!r} cut {self.cut!r}")

    def weights_identity(self, quality: Quality) -> str | None:
        return file_sha256(self.checkpoint_path(quality))

    def adapter(self) -> Any:
        """The task model cut at ``cut`` (built once)."""
        if self._adapter is None:
            self._adapter = split_adapter(self.model(), self.cut)
        return self._adapter

    def net(self, quality: int) -> tuple[Any, bytes]:
        """(network, 4-byte file tag) of ``quality`` (loaded once, bound to the task model and cut)."""
        with self._lock:
            if quality not in self._nets:
                from vcm_plugin.learned.task_checkpoint import TaskCodecCheckpointError, file_tag, load_task_codec

                path = self.checkpoint_path(quality)
                net, data = load_task_codec(path, self.adapter().identity(), self.adapter())
                if data.get("paradigm") != self.paradigm:
                    raise TaskCodecCheckpointError(f"codec {self.name!r}: {str(path)!r} is a "
                                                   f"{data.get('paradigm')!r} codec export")
                self._nets[quality] = (net, file_tag(path))
            return self._nets[quality]

    # -- coding --------------------------------------------------------------------------
    def _codec_input(self, image: np.ndarray, net: Any) -> tuple[Any, tuple[int, int]]:
        """(tensor the codec network encodes, Y1's (h, w)): ``direct``: the image at the model's input geometry,
        Y1 having ceil(size / stride) cells (padded convolutions); ``feature``: Y1 = front(X) itself."""
        if self.paradigm == "direct":
            x = self.adapter().input_tensor(image)
            stride = net.config.stride
            return x, (-(-x.shape[-2] // stride), -(-x.shape[-1] // stride))
        y1 = self.adapter().from_value(self.model().front(self.cut, image))
        return y1.float(), (int(y1.shape[-2]), int(y1.shape[-1]))

    def _encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        import torch

        if self.threads:
            torch.set_num_threads(int(self.threads))
        net, tag = self.net(int(quality))
        with torch.no_grad():
            x, size = self._codec_input(image, net)
            out = net.compress(x)
            estimated = likelihood_bits(net(x, size)["likelihoods"])  # beside the rate, never the rate
        strings = [s[0] for s in out["strings"]]
        data = bytearray([_VERSION, _PARADIGMS[self.paradigm]]) + tag
        for v in (*size, *out["shape"], len(strings)):
            data += encode_varint(int(v))
        for s in strings:
            data += encode_varint(len(s)) + s
        return self.make_bitstream(bytes(data), quality, image, estimated_bits=estimated)

    def _decode(self, bitstream: Bitstream) -> CutValue:
        import torch

        source = f"codec {self.name!r} bitstream"
        reader = ByteReader(bitstream.data, source)
        version, paradigm = reader.take(2, "header")
        if version != _VERSION or paradigm != _PARADIGMS[self.paradigm]:
            raise BitstreamFormatError(f"{source}: unknown version {version} or paradigm {paradigm}")
        net, tag = self.net(int(bitstream.quality))
        theirs = reader.take(4, "model tag")
        if theirs != tag:
            raise BitstreamFormatError(f"{source}: made by another model (tag {theirs.hex()}), not by the "
                                       f"checkpoint of quality {bitstream.quality} (tag {tag.hex()}): a feature "
                                       f"bitstream must be decoded with the weights that encoded it")
        h, w, lh, lw, count = (reader.varint(what) for what in ("Y1 height", "Y1 width", "latent height",
                                                                 "latent width", "string count"))
        if count != net.string_count() or not (0 < lh <= 4096 and 0 < lw <= 4096 and 0 < h <= 16384 and 0 < w <= 16384):
            raise BitstreamFormatError(f"{source}: implausible header (Y1 {h}x{w}, latent {lh}x{lw}, {count} strings)")
        strings = [[reader.take(reader.varint("string length"), "string")] for _ in range(count)]
        if reader.pos != len(reader.data):
            raise BitstreamFormatError(f"{source}: trailing bytes after the last string")
        with torch.no_grad():
            y1_hat = net.decompress(strings, (lh, lw), (h, w))
        if tuple(y1_hat.shape[-2:]) != (h, w):
            raise BitstreamFormatError(f"{source}: the latent ({lh}x{lw}) does not cover Y1 ({h}x{w})")
        return self.adapter().to_value(y1_hat, (bitstream.height, bitstream.width))


# no fields of their own: the dataclass fields, __init__ and params() are LearnedTaskCodec's
@register_codec
class DirectCodec(LearnedTaskCodec):
    """Direct coding: image encoder -> bitstream -> latent decoder -> Ŷ1 at the cut point."""

    name: ClassVar[str] = "direct"
    paradigm: ClassVar[str] = "direct"


@register_codec
class LearnedFeatureCodec(LearnedTaskCodec):
    """Model splitting with a learned codec: Y1 = front(X) -> analysis -> bitstream -> synthesis -> Ŷ1."""

    name: ClassVar[str] = "feature-learned"
    paradigm: ClassVar[str] = "feature"
