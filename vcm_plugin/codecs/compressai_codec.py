"""Learned image codecs from CompressAI: the ``compressai`` codec.

One codec, three model sources (``model`` names which):

- a **project-zoo family** (default ``vcm-hyperprior``): small models trained by this
  project, shipped in the package (:mod:`vcm_plugin.zoo`), quality = zoo quality 1..4;
- a **compressai.zoo architecture** (``bmshj2018-factorized``, ``bmshj2018-hyperprior``,
  ``mbt2018-mean``, ``mbt2018``, ``cheng2020-anchor``, ...) with ``metric`` (mse,
  ms-ssim) and quality 1..8, pretrained weights from torch.hub's cache (``TORCH_HOME``);
- a **checkpoint file** (``checkpoint``) of that architecture, e.g. one exported by
  ``vcm train codec``; ``{quality}`` in the path selects one file per quality.

Coding is real: the image (RGB in [0, 1]) is padded to the model's downsampling
multiple (64 for hyperprior models) by edge replication, ``compress`` entropy-codes the
latents with CompressAI's rANS coder, and the bitstream is those strings plus a small
header (:mod:`vcm_plugin.learned.packing`: model tag, quality, original size, latent
shape, string lengths). ``bpp`` counts every byte of it, never likelihoods. Decoding
crops the padding away. The entropy model's estimate (-sum log2 of the likelihoods of a forward
pass on the same padded input) rides along as ``Bitstream.estimated_bits`` (reported as
``estimated_bpp`` beside ``bpp``; the forward pass is part of the encode time).

Determinism caveat: encoding and decoding on the same machine and library versions
are exact. Learned entropy coders are NOT guaranteed to decode across platforms: the
hyperprior's scales are computed in floating point on both sides, and a different
CPU, BLAS or thread count can round one scale index differently and desynchronise
the arithmetic decoder. Store decoded results, not only bitstreams, when comparing
across machines.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np

from vcm_plugin.codecs.base import Availability, Bitstream, Codec, Quality, QualityRange
from vcm_plugin.codecs.registry import modules_installed, register_codec
from vcm_plugin.errors import BitstreamFormatError, QualityError
from vcm_plugin.learned.models import likelihood_bits
from vcm_plugin.learned.packing import LearnedPayload, model_tag
from vcm_plugin.weights import file_sha256, find_weights, hub_checkpoint_dir

DEFAULT_MODEL = "vcm-hyperprior"


@dataclass
class _Loaded:
    model: Any
    identity: str
    tag: bytes
    factor: int


@register_codec
@dataclass
class CompressAICodec(Codec):
    """CompressAI learned codec: project-zoo family, compressai.zoo model, or checkpoint file."""

    name: ClassVar[str] = "compressai"
    quality_range: ClassVar[QualityRange] = QualityRange(
        "quality", 1, 8, higher_is_more_bits=True,
        description="model index: compressai.zoo 1..8 (cheng2020 1..6), project zoo 1..4")

    model: str = DEFAULT_MODEL
    metric: Literal["mse", "ms-ssim"] = "mse"
    checkpoint: str | None = None
    search_path: list[str] | None = None
    download: bool = False
    threads: int | None = None  # torch intra-op threads (None: leave torch's setting)
    _cache: dict[int, _Loaded] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.metric not in ("mse", "ms-ssim"):  # built directly, not by the registry
            raise ValueError(f"compressai metric {self.metric!r} is not 'mse' or 'ms-ssim'")
        self._lock = threading.Lock()
        self.quality_range = self._model_quality_range()  # type: ignore[misc]  # per instance (see Codec)

    def _model_quality_range(self) -> QualityRange:
        """The qualities of this model: its project-zoo family's, 1..6 for cheng2020, else the class's 1..8."""
        source = self._source()
        if source == "project-zoo":
            from vcm_plugin.zoo import zoo_group

            qualities = sorted(zoo_group(self.model))
            return replace(type(self).quality_range, minimum=qualities[0], maximum=qualities[-1],
                           description=f"project-zoo model {self.model!r}: qualities {qualities}")
        if source == "compressai-zoo" and self.model.startswith("cheng2020"):
            return replace(type(self).quality_range, maximum=6, description=f"compressai.zoo {self.model}")
        return type(self).quality_range

    # -- availability / identity --------------------------------------------------------
    def is_available(self) -> Availability:
        # found, not imported: importing compressai takes seconds (`vcm codecs` lists this codec)
        return modules_installed("torch", "compressai", hint="pip install compressai")

    def version(self) -> str:
        from importlib.metadata import version

        return f"{super().version()} compressai {version('compressai')} torch {version('torch')}"

    def _source(self) -> str:
        from vcm_plugin.zoo import zoo_groups

        if self.checkpoint:
            return "checkpoint"
        return "project-zoo" if self.model in zoo_groups() else "compressai-zoo"

    def _checkpoint_name(self, quality: Quality) -> str:
        return str(self.checkpoint).replace("{quality}", str(int(quality)))

    def _zoo_entry(self, quality: Quality) -> Any:
        """The project-zoo entry of ``quality``; :class:`QualityError` when the family has no such quality."""
        from vcm_plugin.zoo import zoo_group

        members = zoo_group(self.model)
        if int(quality) not in members:
            raise QualityError(f"codec 'compressai': project-zoo model {self.model!r} has qualities "
                               f"{sorted(members)}, not {quality}")
        return members[int(quality)]

    def check_ready(self, quality: Quality) -> None:
        """Find (not load) the weights file of ``quality``; raise naming it and the folders if missing."""
        super().check_ready(quality)
        source = self._source()
        if source == "checkpoint":
            find_weights(self._checkpoint_name(quality), self.search_path)
        elif source == "project-zoo":
            self._zoo_entry(quality)
        elif not self.download:
            from vcm_plugin.learned.models import zoo_checkpoint_url

            name = zoo_checkpoint_url(self.model, self.metric, int(quality)).rsplit("/", 1)[-1]
            find_weights(name, [*(self.search_path or []), str(hub_checkpoint_dir())])

    def weights_identity(self, quality: Quality) -> str | None:
        """SHA-256 of the weights file used at ``quality`` (hashed, not loaded)."""
        source = self._source()
        if source == "checkpoint":
            return file_sha256(find_weights(self._checkpoint_name(quality), self.search_path))
        if source == "project-zoo":
            from vcm_plugin.zoo import zoo_group

            entry = zoo_group(self.model).get(int(quality))
            return entry.sha256 if entry else None
        return None  # compressai.zoo files: the official name (in params/quality) pins the hash prefix

    # -- model loading --------------------------------------------------------------------
    def _load(self, quality: int) -> _Loaded:
        with self._lock:
            if quality not in self._cache:
                self._cache[quality] = self._load_uncached(quality)
            return self._cache[quality]

    def _load_uncached(self, quality: int) -> _Loaded:
        from vcm_plugin.learned import models

        source = self._source()
        if source == "checkpoint":
            model, sha = models.load_checkpoint_model(self._checkpoint_name(quality), self.model, self.search_path)
        elif source == "project-zoo":
            from vcm_plugin.zoo import zoo_file

            entry = self._zoo_entry(quality)
            model, sha = models.load_checkpoint_model(zoo_file(entry), entry.architecture)
        else:
            model, sha = models.load_compressai_zoo(self.model, self.metric, quality, self.search_path, self.download)
        identity = f"{self.model}|{self.metric}|q{quality}|{sha}"
        factor = int(getattr(model, "downsampling_factor", 64))
        return _Loaded(model, identity, model_tag(identity), factor)

    def model_identity(self, quality: Quality) -> str:
        """What identifies the network used at ``quality`` (architecture, metric, weights SHA-256)."""
        return self._load(int(quality)).identity

    # -- coding ---------------------------------------------------------------------------
    def _torch(self):
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        return torch

    def _encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        torch = self._torch()
        loaded = self._load(int(quality))
        height, width = image.shape[:2]
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
        pad_h, pad_w = (-height) % loaded.factor, (-width) % loaded.factor
        if pad_h or pad_w:
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.no_grad():
            out = loaded.model.compress(x)
            estimated = likelihood_bits(loaded.model(x)["likelihoods"])  # beside the rate, never the rate
        strings = tuple(bytes(s[0]) for s in out["strings"])
        payload = LearnedPayload(loaded.tag, int(quality), height, width, tuple(int(d) for d in out["shape"]), strings)
        return self.make_bitstream(payload.to_bytes(), quality, image, estimated_bits=estimated)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        torch = self._torch()
        source = f"codec 'compressai' bitstream (model {self.model!r})"
        payload = LearnedPayload.from_bytes(bitstream.data, source)
        if not 1 <= payload.quality <= self.quality_range.maximum:
            raise BitstreamFormatError(f"{source}: header quality {payload.quality} is not a valid quality")
        loaded = self._load(payload.quality)
        if payload.tag != loaded.tag:
            raise BitstreamFormatError(
                f"{source}: the header's model tag {payload.tag.hex()} does not match this codec's model "
                f"{loaded.identity.rsplit('|', 1)[0]} (tag {loaded.tag.hex()}): the stream was made by another "
                "model, quality or weights file")
        if (payload.height, payload.width) != (bitstream.height, bitstream.width):
            raise BitstreamFormatError(f"{source}: header size {payload.width}x{payload.height} differs from the "
                                       f"container's {bitstream.width}x{bitstream.height}")
        with torch.no_grad():
            out = loaded.model.decompress([[s] for s in payload.strings], list(payload.shape))
        x_hat = out["x_hat"][0, :, :payload.height, :payload.width].clamp_(0, 1)
        return x_hat.mul(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
