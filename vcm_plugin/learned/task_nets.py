"""Networks of the learned task codecs: direct coding (X -> Ŷ1) and learned feature coding (Y1 -> Ŷ1).

One CompressAI ``CompressionModel`` covers both paradigms of ../shared/PAPER_NOTES.md:

* **direct** (``in_channels=3``): a CompressAI-style image encoder (``down`` stride-2
  5x5 convolutions with GDN, as ``bmshj2018-hyperprior``'s ``g_a``), the entropy model,
  and a *latent decoder* (``up`` stride-2 transposed convolutions with inverse GDN, a 3x3
  refinement, a 3x3 output convolution) that outputs the cut point's tensor Ŷ1 directly;
  ``2 ** (down - up)`` must be Y1's stride in input pixels.
* **direct** with ``decoder: front``: the latent decoder is ``bmshj2018-hyperprior``'s
  synthesis (back to input resolution, 3 channels) followed by a trainable copy of the
  task model's own front layers (initialised from the task model), so that training starts
  from "image codec + task model" and learns from the task distortion end to end; it can
  start from a trained CompressAI image codec of the same N, M (``init_image_codec``).
  Only Ŷ1 is ever a target: the intermediate 3-channel tensor is free to be anything.
* **direct** with ``encoder: front``: the image encoder is a trainable copy of the task
  model's front layers (X -> Y1) followed by exactly the feature codec's analysis over Y1
  (``up`` stride-2 steps, the same standardisation and padding), and the latent decoder is
  the feature codec's (``plain``). Built with the same seed, it is the split (feature) codec
  at step 0: same weights, same bitstreams; training may then change the front copy too
  (:meth:`TaskCodecNet.set_front_trainable` freezes / unfreezes it).
* **feature** (``in_channels = C1``): the same analysis / synthesis pair over Y1 itself
  (model splitting), with ``down == up``.

Entropy model: ``hyperprior`` (a scale hyperprior as in Ballé et al. 2018 /
``ScaleHyperprior``: ``EntropyBottleneck`` on z, ``GaussianConditional`` on y) or
``factorized`` (one ``EntropyBottleneck`` on y). Feature tensors are standardised per
channel with the mean / std of the training features (buffers saved with the weights),
and the decoder predicts the standardised Y1.

Sizes that are not multiples of the total stride (``2 ** down``, times 4 with the
hyperprior) are replicate-padded on the bottom / right before encoding; the decoded Ŷ1 is
cropped to the cut point's (h, w), which the bitstream header carries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vcm_plugin.learned.models import import_compressai

import_compressai()  # quietly first: compressai's import warns about torch.jit
from compressai.entropy_models import EntropyBottleneck, GaussianConditional  # noqa: E402
from compressai.layers import GDN, ResidualBlock  # noqa: E402
from compressai.models.base import CompressionModel  # noqa: E402
from compressai.models.utils import conv, deconv  # noqa: E402


@dataclass(frozen=True)
class TaskNetConfig:
    """Architecture of a :class:`TaskCodecNet` (all sizes in channels / stride-2 steps)."""

    paradigm: Literal["direct", "feature"]
    in_channels: int
    out_channels: int
    down: int
    up: int
    N: int = 64
    M: int = 96
    entropy: Literal["hyperprior", "factorized"] = "hyperprior"
    res_blocks: int = 2
    decoder: Literal["plain", "front"] = "plain"
    encoder: Literal["plain", "front"] = "plain"

    def __post_init__(self) -> None:
        if self.paradigm not in ("direct", "feature") or self.entropy not in ("hyperprior", "factorized"):
            raise ValueError(f"paradigm {self.paradigm!r} / entropy {self.entropy!r} not supported")
        if min(self.in_channels, self.out_channels, self.N, self.M) < 1 or self.down < 0 or self.up < 0:
            raise ValueError(f"bad task codec sizes: {self}")
        if self.up > self.down:
            raise ValueError(f"up ({self.up}) cannot exceed down ({self.down})")
        if self.decoder == "front" and (self.paradigm != "direct" or self.in_channels != 3):
            raise ValueError("decoder 'front' is for direct coding of RGB images")
        if self.encoder not in ("plain", "front") or self.decoder not in ("plain", "front"):
            raise ValueError(f"encoder {self.encoder!r} / decoder {self.decoder!r} not supported")
        if self.encoder == "front" and (self.paradigm != "direct" or self.in_channels != 3 or self.decoder != "plain"):
            raise ValueError("encoder 'front' is for direct coding of RGB images, with decoder 'plain'")

    @property
    def analysis_channels(self) -> int:
        """Channels the analysis transform g_a takes: Y1's with ``encoder: front``, else ``in_channels``."""
        return self.out_channels if self.encoder == "front" else self.in_channels

    @property
    def multiple(self) -> int:
        """Input sizes are padded to a multiple of this many pixels (or Y1 cells; with ``encoder: front`` the
        Y1 of the front copy is padded, as by the feature codec)."""
        steps = self.up if self.encoder == "front" else self.down
        return 2 ** (steps + (2 if self.entropy == "hyperprior" else 0))

    @property
    def stride(self) -> int:
        """Input pixels per output cell (1 for feature codecs)."""
        return 2 ** (self.down - self.up)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Normalise(nn.Module):
    """(x - mean) / std with fixed (1, 3, 1, 1) buffers: the first layer of a task model's front copy."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_task_net(config: TaskNetConfig, front: Any = None) -> Any:
    """A fresh :class:`TaskCodecNet`; ``front``: the trainable copy of the task model's front layers that
    decoder ``front`` ends with, or encoder ``front`` starts with (``SplitAdapter.front_module()``)."""
    if "front" in (config.decoder, config.encoder) and front is None:
        raise ValueError(f"{'decoder' if config.decoder == 'front' else 'encoder'} 'front' needs the task model's "
                         "front module")
    return TaskCodecNet(config, front)


class TaskCodecNet(CompressionModel):
    """Analysis -> entropy model -> synthesis to the cut point's tensor (see the module docstring)."""

    def __init__(self, config: TaskNetConfig, front: Any = None) -> None:
        super().__init__()
        self.config = config
        c, n, m = config, config.N, config.M
        steps = c.up if c.encoder == "front" else c.down  # stride-2 steps of g_a itself
        strides = [1] * max(0, 2 - steps) + [2] * steps
        layers: list[nn.Module] = []
        ch = c.analysis_channels
        for i, s in enumerate(strides):
            last = i == len(strides) - 1
            layers.append(conv(ch, m if last else n, kernel_size=5 if s == 2 else 3, stride=s))
            if not last:
                layers.append(GDN(n))
            ch = n
        self.g_a = nn.Sequential(*layers)
        syn: list[nn.Module] = []
        ch = m
        if c.decoder == "front":  # bmshj2018's image synthesis, then the task model's (trainable) front
            for i in range(c.down):
                last = i == c.down - 1
                syn.append(deconv(ch, 3 if last else n, kernel_size=5, stride=2))
                if not last:
                    syn.append(GDN(n, inverse=True))
                ch = n
            self.front_copy = front
        else:
            for _ in range(c.up):
                syn += [deconv(ch, n, kernel_size=5, stride=2), GDN(n, inverse=True)]
                ch = n
            syn += [conv(ch, n, kernel_size=3, stride=1), GDN(n, inverse=True)]
            syn += [ResidualBlock(n, n) for _ in range(c.res_blocks)] + [conv(n, c.out_channels, 3, 1)]
        self.g_s = nn.Sequential(*syn)
        if c.entropy == "hyperprior":
            self.h_a = nn.Sequential(conv(m, n, 3, 1), nn.ReLU(inplace=True), conv(n, n, 5, 2),
                                     nn.ReLU(inplace=True), conv(n, n, 5, 2))
            self.h_s = nn.Sequential(deconv(n, n, 5, 2), nn.ReLU(inplace=True), deconv(n, n, 5, 2),
                                     nn.ReLU(inplace=True), conv(n, m, 3, 1), nn.ReLU(inplace=True))
            self.entropy_bottleneck = EntropyBottleneck(n)
            self.gaussian_conditional = GaussianConditional(None)
        else:
            self.entropy_bottleneck = EntropyBottleneck(m)
        for side, channels in (("in", c.analysis_channels), ("out", c.out_channels)):  # feature statistics
            self.register_buffer(f"{side}_mean", torch.zeros(1, channels, 1, 1))
            self.register_buffer(f"{side}_std", torch.ones(1, channels, 1, 1))
        if c.encoder == "front":  # registered last: the other modules are built (and seeded) as the feature codec's
            self.front_encoder = front

    # -- helpers -------------------------------------------------------------------------
    def set_statistics(self, inputs: torch.Tensor | None, outputs: torch.Tensor) -> None:
        """Per-channel mean / std of feature inputs (feature codecs) and of Y1 targets."""
        pairs = [(outputs, self.out_mean, self.out_std)]
        if inputs is not None and (self.config.paradigm == "feature" or self.config.encoder == "front"):
            pairs.append((inputs, self.in_mean, self.in_std))  # encoder front: Y1 of the front copy at step 0
        for t, mean, std in pairs:
            mean.copy_(t.mean(dim=(0, 2, 3), keepdim=True))
            std.copy_(t.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3))

    def set_front_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze the front copy of ``encoder: front`` (its parameters' ``requires_grad``)."""
        for p in self.front_encoder.parameters():
            p.requires_grad_(trainable)

    def _analysis_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.encoder == "front":
            x = self.front_encoder(x)
        if self.config.paradigm == "feature" or self.config.encoder == "front":
            x = (x - self.in_mean) / self.in_std
        k = self.config.multiple
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % k, 0, (-h) % k), mode="replicate") if (h % k or w % k) else x

    def _synthesis(self, y_hat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.config.decoder == "front":
            stride = self.config.stride
            image = self.g_s(y_hat)[..., :size[0] * stride, :size[1] * stride]
            return self.front_copy(image)[..., :size[0], :size[1]]
        out = self.g_s(y_hat)[..., :size[0], :size[1]]
        return out * self.out_std + self.out_mean

    def train(self, mode: bool = True) -> Any:
        """Train mode, except the front copy's normalisation layers, which keep the task model's statistics."""
        super().train(mode)
        for name in ("front_copy", "front_encoder"):
            if getattr(self, name, None) is not None:
                getattr(self, name).eval()
        return self

    # -- training ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> dict[str, Any]:
        """Noisy-quantisation pass: Ŷ1 (cropped to ``size``) and the likelihoods for the rate."""
        y = self.g_a(self._analysis_input(x))
        if self.config.entropy == "hyperprior":
            z = self.h_a(torch.abs(y))
            z_hat, z_lik = self.entropy_bottleneck(z)
            y_hat, y_lik = self.gaussian_conditional(y, self.h_s(z_hat))
            likelihoods = {"y": y_lik, "z": z_lik}
        else:
            y_hat, y_lik = self.entropy_bottleneck(y)
            likelihoods = {"y": y_lik}
        return {"y1_hat": self._synthesis(y_hat, size), "likelihoods": likelihoods}

    # -- real coding ---------------------------------------------------------------------
    def compress(self, x: torch.Tensor) -> dict[str, Any]:
        """Entropy-coded strings (lists of one bytes object per batch item) and the latent shape."""
        y = self.g_a(self._analysis_input(x))
        if self.config.entropy == "factorized":
            return {"strings": [self.entropy_bottleneck.compress(y)], "shape": tuple(y.shape[-2:])}
        z = self.h_a(torch.abs(y))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        indexes = self.gaussian_conditional.build_indexes(self.h_s(z_hat))
        y_strings = self.gaussian_conditional.compress(y, indexes)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.shape[-2:])}

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int], size: tuple[int, int]) -> Any:
        """Ŷ1 (cropped to ``size``) from :meth:`compress`'s strings."""
        if self.config.entropy == "factorized":
            y_hat = self.entropy_bottleneck.decompress(strings[0], shape)
        else:
            z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
            indexes = self.gaussian_conditional.build_indexes(self.h_s(z_hat))
            y_hat = self.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
        return self._synthesis(y_hat, size)

    def string_count(self) -> int:
        return 1 if self.config.entropy == "factorized" else 2
