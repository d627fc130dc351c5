"""torchvision ImageNet classifiers as task models (``torchvision-classification``).

Any builder of ``torchvision.models.list_models(module=torchvision.models)`` (resnet50,
resnet18, mobilenet_v3_large, ...) with a member of its weights enum (``"DEFAULT"``,
``"IMAGENET1K_V2"``). The weights are the enum's file (the file name of its URL, e.g.
``resnet50-11ad3fa6.pth``) looked up with :func:`~vcm_plugin.weights.find_weights` in
``search_path``, then torch.hub's cache ``torch.hub.get_dir()/checkpoints``, then
``$VCM_WEIGHTS`` and the user cache; or an explicit ``checkpoint`` (a state dict of the same
network). Nothing is downloaded unless ``download`` is true: a missing file raises
:class:`~vcm_plugin.errors.WeightsNotFoundError` naming the file and every folder.
Files are read with ``weights_only=True``; a file named like torchvision's must have the
SHA-256 prefix its name carries. The network is built by torchvision's own builder with
that state dict (so e.g. Inception's ``transform_input`` is as published).

Preprocessing is the weights enum's ``transforms()`` (resize, centre crop, normalise: e.g.
resize 232 / crop 224 for ResNet-50 V2) applied to the (H, W, 3) uint8 RGB image.
Output: :class:`~vcm_plugin.tasks.predictions.ClassScores`, the softmax over the 1000 ImageNet
classes in torchvision's order (the order of the ``imagenet`` dataset's class indices).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vcm_plugin.errors import TaskModelError, WeightsNotFoundError
from vcm_plugin.tasks.base import INPUT, TaskModel, check_image, state_dict_mismatch
from vcm_plugin.tasks.graph import analyse_cuts, check_cut, fx_front, fx_rest
from vcm_plugin.tasks.predictions import ClassScores
from vcm_plugin.tasks.registry import register_task_model
from vcm_plugin.tasks.split import OUTPUT, CutValue, ModelAdapter, freeze
from vcm_plugin.tasks.torchvision_backend import build_with_state_dict, url_file_name, weights_member


class TorchvisionClassifierAdapter(ModelAdapter):
    """A torchvision classifier cut at any clean graph node (``torchvision.models.feature_extraction``);
    ``vcm layers <architecture>`` lists the nodes, so :meth:`cut_points` lists only ``input``."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self._cuts: list[Any] | None = None
        self._modules: dict[tuple[str, str | None], Any] = {}  # (cut, stop) -> fx module

    def graph(self) -> list[Any]:
        """The network's cut points (:func:`~vcm_plugin.tasks.graph.analyse_cuts` at its crop size)."""
        if self._cuts is None:
            import torch

            net = self.model.network()
            crop = getattr(self.model._transform, "crop_size", [224])
            size = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
            self._cuts = analyse_cuts(net, torch.zeros(1, 3, size, size))
        return self._cuts

    def module(self, cut: str, stop: str | None = "front") -> Any:
        """The frozen fx module X -> Y1 (``stop="front"``) or Y1 -> node ``stop`` (None: the logits)."""
        if (cut, stop) not in self._modules:
            net = self.model.network()
            self._modules[cut, stop] = freeze(fx_front(net, cut) if stop == "front" else fx_rest(net, cut, stop))
        return self._modules[cut, stop]

    def cut_points(self) -> list[str]:
        return [INPUT]

    def points(self) -> list[str]:
        return [INPUT, *(c.name for c in self.graph()), OUTPUT]

    def check_cut(self, point: str) -> str:
        check_cut(self.graph(), point, self.model.architecture)
        return point

    def resolve(self, point: str) -> str:
        names = [c.name for c in self.graph()]
        inside = [n for n in names if n.startswith(point + ".")]
        return inside[-1] if point not in names and inside else point

    @property
    def norm(self) -> tuple[Any, Any]:
        import torch

        self.model.load()
        transform = self.model._transform
        mean = torch.tensor(getattr(transform, "mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        return mean, torch.tensor(getattr(transform, "std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)

    def prepare(self, image: np.ndarray) -> Any:
        return self.model.preprocess(image)

    def forward_to(self, x: Any, cut: str) -> dict[str, Any]:
        return {"y": self.module(cut)(x)}

    def rest(self, cut: str, value: CutValue) -> ClassScores:
        import torch

        y1 = torch.as_tensor(value.tensor, dtype=torch.float32).to(self.model.device)
        return self.model.scores(self.module(cut, None)(y1))

    def mid(self, cut: str, y1: Any, point: str) -> list[Any]:
        return [y1] if point == self.resolve(cut) else [self.module(cut, None if point == OUTPUT else point)(y1)]

    def front_layers(self, cut: str) -> list[Any]:
        return [self.module(cut)]


@register_task_model
@dataclass
class TorchvisionClassifier(TaskModel):
    """A torchvision ImageNet classifier: image -> softmax over its classes (see the module docstring).

    Fields: ``architecture`` a torchvision classification builder name; ``weights`` a member
    of its weights enum (also with ``checkpoint``: it fixes preprocessing, class names and
    builder options); ``checkpoint`` a state-dict file (name looked up by ``find_weights``, or
    a path); ``search_path`` folders searched first; ``download`` fetch the enum's file from
    its URL into torch.hub's cache when it is missing (needs internet; off by default);
    ``device`` a torch device.
    """

    name: ClassVar[str] = "torchvision-classification"
    task: ClassVar[str] = "classification"
    transient: ClassVar[tuple[str, ...]] = ("_net", "_transform")
    adapter_class: ClassVar[type] = TorchvisionClassifierAdapter

    architecture: str = "resnet50"
    weights: str = "DEFAULT"
    checkpoint: str | None = None
    search_path: list[str] | None = None
    download: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        import torchvision
        from torchvision.models import list_models

        names = list_models(module=torchvision.models)
        if self.architecture not in names:
            near = difflib.get_close_matches(str(self.architecture), names, n=5, cutoff=0.4)
            raise TaskModelError(f"task model {self.name!r}: {self.architecture!r} is not a torchvision "
                                 f"classification model; nearest valid names: {near or names[:5]} "
                                 f"(all: torchvision.models.list_models(module=torchvision.models))")
        self.categories = dict(enumerate(self.weights_enum().meta["categories"]))

    # -- weights -----------------------------------------------------------------------------
    def weights_enum(self) -> Any:
        """The torchvision weights enum member named by ``weights``."""
        return weights_member(self, self.architecture, self.weights, TaskModelError)

    def weights_file_name(self) -> str:
        """The file name of the enum's URL (torch.hub's cache name, e.g. ``resnet50-11ad3fa6.pth``)."""
        return url_file_name(self.weights_enum().url)

    def weights_path(self) -> Path:
        """The file that will be loaded: ``checkpoint``, or the enum's file; raises if it is missing."""
        from vcm_plugin.weights import find_weights, hub_checkpoint_dir

        if self.checkpoint is not None:
            return find_weights(self.checkpoint, self.search_path)
        member = self.weights_enum()
        hub = hub_checkpoint_dir()
        try:
            return find_weights(self.weights_file_name(), [*(self.search_path or []), hub])
        except WeightsNotFoundError as exc:
            raise WeightsNotFoundError(
                f"task model {self.name!r} ({self.architecture}, weights {member}): {exc}\nWith internet, set "
                f"download: true to fetch it from {member.url} into {hub}, or pass checkpoint=<path>.") from None

    def identity(self) -> dict[str, Any]:
        """Name, params, the torchvision version and the weights: enum and URL (whose name carries the
        SHA-256 prefix checked on load), or the checkpoint file's SHA-256."""
        import torchvision

        params = {k: v for k, v in self.params().items() if k not in ("search_path", "download")}
        member = self.weights_enum()
        source = {"url": member.url} if self.checkpoint is None else {"sha256": self.weights_sha256()}
        return {"name": self.name, "params": params, "torchvision": torchvision.__version__,
                "weights": {"enum": str(member), **source}}

    # -- model -------------------------------------------------------------------------------
    def _load(self) -> None:
        from vcm_plugin.tasks.torchvision_backend import check_hash_in_name
        from vcm_plugin.weights import load_state_dict_safely

        member = self.weights_enum()
        try:
            path: Path | None = self.weights_path()
        except WeightsNotFoundError:
            if not self.download or self.checkpoint is not None:
                raise
            path = None
        if path is None:  # download: torch.hub checks the hash prefix of the file name
            state = member.get_state_dict(progress=True, check_hash=True, weights_only=True)
        else:
            if path.name == self.weights_file_name():
                check_hash_in_name(path)
            state = load_state_dict_safely(path)
            if self.checkpoint is not None:
                self.weights_sha256()
        self._transform = member.transforms()
        self._net = freeze(self._build(member, state, path)).to(self.device)

    def _build(self, member: Any, state: dict[str, Any], path: Path | None) -> Any:
        where = str(path) if path is not None else member.url
        try:
            return build_with_state_dict(self.architecture, member, state)
        except TaskModelError:
            raise
        except RuntimeError as exc:  # load_state_dict(strict=True) refused the keys or shapes
            detail = self._mismatch(member, state) or str(exc).strip().splitlines()[0]
            raise TaskModelError(f"task model {self.name!r}: weights file {where!r} does not fit "
                                 f"{self.architecture!r}: {detail}") from exc

    def _mismatch(self, member: Any, state: dict[str, Any]) -> str:
        """The key / shape differences of ``state`` against a freshly built network."""
        import torch
        from torchvision.models import get_model

        with torch.random.fork_rng(devices=[]):
            reference = get_model(self.architecture, weights=None, num_classes=len(member.meta["categories"]))
        expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        return state_dict_mismatch(expected, state)

    # -- inference ---------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> Any:
        """(H, W, 3) uint8 RGB -> (1, 3, h, w) normalised float tensor (the weights' transforms)."""
        import torch

        image = check_image(image, self.name)
        self.load()
        x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)  # a read-only array warns
        return self._transform(x).unsqueeze(0).to(self.device)

    def scores(self, logits: Any) -> ClassScores:
        """(1, classes) logits -> the softmax probabilities; another shape is an error."""
        import torch

        if logits.ndim != 2 or logits.shape[1] != len(self.categories):
            raise TaskModelError(f"task model {self.name!r} ({self.architecture}): output of shape "
                                 f"{tuple(logits.shape)}, expected (1, {len(self.categories)})")
        return ClassScores(torch.softmax(logits.float(), dim=1)[0].cpu().numpy())

    def _predict(self, image: np.ndarray) -> ClassScores:
        """Class probabilities (softmax) of an (H, W, 3) uint8 RGB image."""
        import torch

        x = self.preprocess(image)
        with torch.inference_mode():
            return self.scores(self._net(x))
