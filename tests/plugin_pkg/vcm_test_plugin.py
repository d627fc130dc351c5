"""An out-of-tree codec: drop low bits of every sample, then zlib. It imports only the public API."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from vcm_plugin import Bitstream, Codec, QualityRange


@dataclass
class PosterizeZlibCodec(Codec):
    name: ClassVar[str] = "posterize-zlib"
    quality_range: ClassVar[QualityRange] = QualityRange("bits", 1, 8, higher_is_more_bits=True)

    level: int = 9

    def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
        shift = 8 - int(quality)
        kept = (image >> shift).astype(np.uint8)
        header = bytes([shift]) + image.shape[0].to_bytes(4, "big") + image.shape[1].to_bytes(4, "big")
        return self.make_bitstream(header + zlib.compress(kept.tobytes(), self.level), quality, image)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        shift, data = bitstream.data[0], bitstream.data[9:]
        height, width = int.from_bytes(bitstream.data[1:5], "big"), int.from_bytes(bitstream.data[5:9], "big")
        kept = np.frombuffer(zlib.decompress(data), np.uint8).reshape(height, width, 3)
        return ((kept.astype(np.uint16) << shift) + ((1 << shift) >> 1)).astype(np.uint8)


# -- a third-party task model, and cut points for it, through entry points ------------------
from vcm_plugin.splitting.adapter import SplitAdapter  # noqa: E402
from vcm_plugin.tasks.base import TaskModel  # noqa: E402
from vcm_plugin.tasks.predictions import ClassScores  # noqa: E402


@dataclass
class TinyConvNet(TaskModel):
    """Two seeded 3x3 convolutions and a linear layer over 4 classes (no weights file)."""

    name: ClassVar[str] = "tiny-convnet"
    task: ClassVar[str] = "classification"

    def network(self):
        import torch

        if getattr(self, "_net", None) is None:
            torch.manual_seed(0)
            self._net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 8, 3, 2, 1), torch.nn.ReLU(),
                                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                            torch.nn.Linear(8, 4)).eval()
        return self._net

    def run_from(self, point, value):
        import torch

        start = {"input": 0, "conv1": 2, "conv2": 4}[point]
        x = torch.from_numpy(np.array(value, np.float32)).permute(2, 0, 1)[None] / 255 if point == "input" else value
        with torch.no_grad():
            return ClassScores(torch.softmax(self.network()[start:](x), 1)[0].numpy())


class TinyConvNetSplit(SplitAdapter):
    POINTS = ["input", "conv1", "conv2", "output"]
    STOP = {"conv1": 2, "conv2": 4, "output": 7}

    def input_tensor(self, image):
        import torch

        return torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1)[None] / 255

    def front(self, x):
        import torch

        with torch.no_grad():
            return self.model.network()[:self.STOP[self.cut]](x)

    def points(self):
        return self.POINTS

    def mid(self, y1, point):
        self.check_distillation_point(point)
        return [self.model.network()[self.STOP[self.cut]:self.STOP[point]](y1)]

    def to_value(self, y1, image_hw):
        return y1

    def from_value(self, value):
        return value


def tiny_convnet_cut_points(model, cut):
    if cut not in ("conv1", "conv2"):
        from vcm_plugin.errors import TaskModelError

        raise TaskModelError(f"tiny-convnet has no cut point {cut!r}; valid: conv1, conv2")
    return TinyConvNetSplit(model, cut)
