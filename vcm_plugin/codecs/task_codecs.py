"""Learned task codecs in the harness: ``direct`` (direct coding) and ``feature-learned`` (model splitting).

Both decode to the value a task model takes at its cut point (``output_point`` = ``cut``),
so their RD points share the evaluator, the anchors and the BD-rate table of image codecs.

* ``direct``: the encoder sees only the image, at the task model's own input geometry
  (resize / letterbox, a deterministic function of X): it never runs the task model. The
  latent decoder outputs Ŷ1.
* ``feature-learned``: the encoder runs the model's front part to Y1 and codes Y1.

``checkpoint`` is an export of ``vcm train direct|feature`` (``{quality}`` in the path
selects one file per quality: quality k is the k-th trained lambda); a relative path is
taken from the working directory, else searched in the weights search path. The export
is bound to a task model's weights and cut point; a codec configured for another one
refuses it, naming both.

Stream: version, paradigm, a 4-byte tag of the checkpoint file (a stream made with other
weights is refused), Y1 (h, w), latent (h, w), then each rANS string with its length
(LEB128 varints). Rate is the whole stream over the pixels of the ORIGINAL image.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vcm_plugin.codecs.base import Availability, Bitstream, Quality, QualityRange, validate_image
from vcm_plugin.codecs.feature import FeatureCodec
from vcm_plugin.codecs.registry import modules_installed, register_codec
from vcm_plugin.errors import BitstreamFormatError, EncodeError, VcmError
from vcm_plugin.varint import ByteReader, encode_varint

_VERSION = 1
_PARADIGMS = {"direct": 0, "feature": 1}


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
        from vcm_plugin.weights import find_weights

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
        from vcm_plugin.weights import file_sha256

        return file_sha256(self.checkpoint_path(quality))

    def adapter(self) -> Any:
        """The task model cut at ``cut`` (built once)."""
        if self._adapter is None:
            from vcm_plugin.splitting.adapter import split_adapter

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
        """(tensor the codec network encodes, Y1's (h, w))."""
        raise NotImplementedError

    def encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        import torch

        image = validate_image(image, self.name)
        quality = self.quality_range.validate(quality, self.name)
        self.require_available()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        net, tag = self.net(int(quality))
        try:
            with torch.no_grad():
                x, size = self._codec_input(image, net)
                out = net.compress(x)
        except VcmError:
            raise
        except Exception as exc:
            raise EncodeError(f"codec {self.name!r} failed on a {image.shape[1]}x{image.shape[0]} image: "
                              f"{exc}") from exc
        strings = [s[0] for s in out["strings"]]
        data = bytearray([_VERSION, _PARADIGMS[self.paradigm]]) + tag
        for v in (*size, *out["shape"], len(strings)):
            data += encode_varint(int(v))
        for s in strings:
            data += encode_varint(len(s)) + s
        return self.make_bitstream(bytes(data), quality, image)

    def _decode_value(self, bitstream: Bitstream) -> Any:
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

    def _encode_value(self, value: Any, quality: Quality) -> bytes:  # pragma: no cover - encode overrides
        raise NotImplementedError


@register_codec
@dataclass
class DirectCodec(LearnedTaskCodec):
    """Direct coding: image encoder -> bitstream -> latent decoder -> Ŷ1 at the cut point."""

    name: ClassVar[str] = "direct"
    paradigm: ClassVar[str] = "direct"

    def _codec_input(self, image: np.ndarray, net: Any) -> tuple[Any, tuple[int, int]]:
        """The image at the model's input geometry; Y1 has ceil(size / stride) cells (padded convolutions)."""
        x = self.adapter().input_tensor(image)
        stride = net.config.stride
        return x, (-(-x.shape[-2] // stride), -(-x.shape[-1] // stride))


@register_codec
@dataclass
class LearnedFeatureCodec(LearnedTaskCodec):
    """Model splitting with a learned codec: Y1 = front(X) -> analysis -> bitstream -> synthesis -> Ŷ1."""

    name: ClassVar[str] = "feature-learned"
    paradigm: ClassVar[str] = "feature"

    def _codec_input(self, image: np.ndarray, net: Any) -> tuple[Any, tuple[int, int]]:
        y1 = self.adapter().from_value(self.model().front(self.cut, image))
        return y1.float(), (int(y1.shape[-2]), int(y1.shape[-1]))
