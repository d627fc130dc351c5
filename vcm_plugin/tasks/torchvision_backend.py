"""torchvision detection and instance-segmentation models as task models.

Weights come from torchvision's weights enums (``"DEFAULT"``, ``"COCO_V1"``), found
where torchvision's standard loader caches them: ``torch.hub.get_dir()/checkpoints``
(``$TORCH_HOME/hub/checkpoints``), under the file name of the enum's URL; or from an
explicit ``weights_file`` resolved through :func:`vcm_plugin.weights.find_weights`.
Nothing is ever downloaded here: a missing file raises
:class:`~vcm_plugin.errors.WeightsNotFoundError` naming the file and the folder
before any network access. The file is read with ``weights_only=True`` (torch.hub
itself unpickles cached files freely), its SHA-256 prefix in the file name is checked,
and the state dict is handed to torchvision's own builder, so the network is built
exactly as ``get_model(name, weights=enum)`` builds it (frozen batch norm, eps fixes).

Outputs are :class:`~vcm_plugin.tasks.predictions.Detections` in COCO category ids: the
torchvision COCO models predict indices into ``weights.meta["categories"]`` (91
entries with ``__background__`` and ``N/A`` holes), mapped to COCO ids by name. Faster / Mask
R-CNN can be cut inside their backbone body and after the FPN (:class:`TorchvisionDetectorAdapter`).
"""

from __future__ import annotations

import dataclasses
import difflib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import numpy as np

from vcm_plugin.errors import TaskModelError, WeightsNotFoundError
from vcm_plugin.tasks.base import INPUT, TaskModel, check_image
from vcm_plugin.tasks.predictions import Detections
from vcm_plugin.tasks.registry import register_task_model
from vcm_plugin.tasks.split import OUTPUT, CutValue, ModelAdapter, freeze

#: torchvision detection builders this backend runs (keypoint R-CNN is not a COCO box/mask task here).
SUPPORTED_MODELS: tuple[str, ...] = (
    "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2",
    "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
)
MASK_MODELS: frozenset[str] = frozenset({"maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"})
FIXED_SIZE_MODELS: frozenset[str] = frozenset({"ssd300_vgg16", "ssdlite320_mobilenet_v3_large"})
_NOT_A_CLASS = frozenset({"__background__", "N/A"})
_BUILD_LOCK = threading.Lock()
_ABSENT = object()


def coco_category_ids(categories: Sequence[str]) -> np.ndarray:
    """Map a model's class-index list to COCO category ids (1..90) by name.

    Returns an int64 array ``ids`` with ``ids[index]`` the COCO id of ``categories[index]``,
    or 0 for ``__background__`` / ``N/A`` entries (predictions to drop). A name that is
    not a COCO category raises :class:`TaskModelError`.
    """
    from vcm_plugin.tasks.coco_names import COCO_ID_BY_NAME

    unknown = [(i, name) for i, name in enumerate(categories) if name not in _NOT_A_CLASS | COCO_ID_BY_NAME.keys()]
    if unknown:
        raise TaskModelError(f"class {unknown[0][0]} {unknown[0][1]!r} of the model is not a COCO category name")
    return np.array([COCO_ID_BY_NAME.get(name, 0) for name in categories], np.int64)


def url_file_name(url: str) -> str:
    """The file name of a weights URL (torch.hub's cache name, e.g. ``resnet50-11ad3fa6.pth``)."""
    return Path(urlparse(url).path).name


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub caches ``url``: ``torch.hub.get_dir()/checkpoints/<file name of the URL>``."""
    from vcm_plugin.weights import hub_checkpoint_dir

    return hub_checkpoint_dir() / url_file_name(url)


def weights_member(model: TaskModel, architecture: str, weights: str, error: type[Exception]) -> Any:
    """The member ``weights`` of ``architecture``'s torchvision weights enum, else ``error`` listing the valid ones."""
    from torchvision.models import get_model_weights

    enum_cls = get_model_weights(architecture)
    try:
        return enum_cls[weights]
    except KeyError:
        raise error(f"task model {model.name!r}: {architecture!r} has no weights {weights!r}; valid: "
                    f"{', '.join(enum_cls.__members__)}") from None


def check_hash_in_name(path: Path) -> None:
    """Verify that the SHA-256 of ``path`` starts with the hex prefix in its file name.

    torch.hub names its files ``<name>-<sha256 prefix>.pth`` but never re-checks a cached
    file; this does. Names without such a prefix are not checked.
    """
    from vcm_plugin.hashing import name_hash_prefix
    from vcm_plugin.weights import file_sha256

    prefix = name_hash_prefix(path.name)
    if prefix is None:
        return
    actual = file_sha256(path)
    if not actual.startswith(prefix):
        raise TaskModelError(f"weights file {str(path)!r} has SHA-256 {actual}, which does not start with "
                             f"{prefix} as its name {path.name!r} says: the file is "
                             "corrupt, truncated or a different checkpoint; download it again")


def masks_to_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """(N, H, W) boolean masks -> N COCO RLE dicts ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if len(masks) == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def outputs_to_detections(output: dict[str, Any], category_ids: np.ndarray, image_hw: tuple[int, int],
                          score_threshold: float = 0.0, mask_threshold: float | None = None) -> Detections:
    """Convert one torchvision detection output dict to :class:`Detections`.

    ``output``: ``boxes`` (N, 4) xyxy in input pixels, ``scores`` (N,), ``labels`` (N,)
    class indices, optionally ``masks`` (N, 1, H, W) probabilities. ``category_ids`` maps
    index -> COCO id (0: drop). Boxes are clipped to ``image_hw`` = (height, width);
    masks are kept (thresholded at ``> mask_threshold``) only when ``mask_threshold`` is not None.
    """
    height, width = image_hw
    boxes = to_numpy(output["boxes"]).astype(np.float32).reshape(-1, 4)
    scores = to_numpy(output["scores"]).astype(np.float32).reshape(-1)
    labels = to_numpy(output["labels"]).astype(np.int64).reshape(-1)
    in_range = (labels >= 0) & (labels < len(category_ids))
    coco = np.where(in_range, category_ids[np.clip(labels, 0, len(category_ids) - 1)], 0)
    keep = (coco > 0) & (scores >= score_threshold)
    boxes = boxes[keep]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    masks = None
    if mask_threshold is not None:
        if "masks" not in output:
            raise TaskModelError("the model returned no masks, but masks were asked for")
        probs = to_numpy(output["masks"])
        probs = probs.reshape(len(probs), *probs.shape[-2:])[keep]
        if probs.shape[1:] != (height, width):
            raise TaskModelError(f"masks are {probs.shape[1:]}, expected the image size {(height, width)}")
        masks = masks_to_rle(probs > mask_threshold)
    return Detections(boxes, scores[keep], coco[keep], masks)


def to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


# -- cut points of the R-CNN detectors (Faster / Mask R-CNN): backbone body children, then the FPN ----------
PREFIX = "body."
FPN = "fpn"  # the cut after the FPN, before the RPN: every FPN output
#: builders whose networks have a backbone body, an FPN and an RPN (the others have no cut points)
RCNN_MODELS: frozenset[str] = frozenset(m for m in SUPPORTED_MODELS if m.startswith(("fasterrcnn_", "maskrcnn_")))


def _body(net: Any) -> Any:
    body = getattr(getattr(net, "backbone", None), "body", None)
    if body is None or not hasattr(body, "return_layers") or not hasattr(net, "rpn"):
        raise TaskModelError(f"{type(net).__name__}: body cut points need an R-CNN with a backbone body "
                             "(Faster / Mask R-CNN)")
    return body


def _body_names(net: Any, child: str) -> list[str]:
    """The body outputs a cut after ``child`` carries: the earlier ``return_layers`` ones (the FPN reads them)
    and ``child``'s own, in execution order."""
    body = _body(net)
    children = [name for name, _ in body.named_children()]
    return [name for name in children[:children.index(child) + 1] if name in body.return_layers or name == child]


def _fpn_names(net: Any) -> list[str]:
    """The FPN's output names, as torchvision names them: the ``return_layers`` values, then the extra block's."""
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    body, block = _body(net), net.backbone.fpn.extra_blocks
    if block is not None and type(block) is not LastLevelMaxPool:
        raise TaskModelError(f"{type(net).__name__}: the names of the outputs of its FPN extra block "
                             f"{type(block).__name__} are not known (LastLevelMaxPool: 'pool')")
    return [body.return_layers[name] for name, _ in body.named_children() if name in body.return_layers] + \
        ([] if block is None else ["pool"])


def _body_outputs(net: Any, child: str, y1: Any) -> Iterator[tuple[str, Any]]:
    """(name, output) of the backbone body's children from ``child`` (whose output is ``y1``) to the last."""
    yield child, y1
    started = False
    for name, module in _body(net).named_children():
        if started:
            y1 = module(y1)
            yield name, y1
        started = started or name == child


def _fpn_features(net: Any, outputs: dict[str, Any]) -> OrderedDict:
    """The FPN maps from ``outputs``: body child name -> output, for at least every ``return_layers`` child."""
    body = _body(net)
    return net.backbone.fpn(OrderedDict((body.return_layers[name], outputs[name]) for name, _ in
                                        body.named_children() if name in body.return_layers))


class TorchvisionDetectorAdapter(ModelAdapter):
    """A torchvision R-CNN cut after a child of its backbone body or after its FPN; ``mid`` runs later body
    children, ``fpn`` and ``output`` are the FPN maps.

    These detectors do not trace with torch.fx (data-dependent control flow in the RPN and ROI heads), so
    the cuts are where their code is a plain sequence: the children of the backbone's body
    (``IntermediateLayerGetter``: ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1`` .. ``layer4`` for
    ResNet-50), named ``body.<child>``, and ``fpn`` (before the RPN). A cut value carries every tensor the
    rest reads, named by body child: the cut child's output and the earlier ``return_layers`` outputs the
    FPN reads (``body.layer3``: ``layer1``, ``layer2``, ``layer3``); at ``fpn``, every FPN output under
    torchvision's keys (``'0'`` .. ``'3'``, ``'pool'``). Only cuts at or before ``body.layer1`` carry one
    tensor (learned codecs). The transformed batch's size and the resized image inside it (to rebuild the
    ``ImageList``) are recomputed from the ORIGINAL image size, as the detector's transform computes them.
    """

    def _is_rcnn(self) -> bool:
        return getattr(self.model, "architecture", None) in RCNN_MODELS

    def points(self) -> list[str]:
        return [INPUT, *(PREFIX + name for name, _ in _body(self.model.network()).named_children()), FPN, OUTPUT]

    def cut_points(self) -> list[str]:
        """``input``, then ``body.<child>`` of an R-CNN's backbone body and ``fpn``."""
        if not self._is_rcnn():
            return [INPUT]
        try:
            return self.points()[:-1]
        except TaskModelError:
            return [INPUT]

    def check_cut(self, point: str) -> str:
        """``point`` if the model can be cut there; errors name the nearest valid points."""
        name = self.model.name
        if not self._is_rcnn():  # refused without building the network
            raise TaskModelError(f"task model {name!r} ({getattr(self.model, 'architecture', '?')}) has no cut "
                                 f"point {point!r}; valid: ['input'] (only Faster / Mask R-CNN are cut: "
                                 f"{sorted(RCNN_MODELS)})")
        points = self.points()[1:-1]
        if point not in points:
            near = difflib.get_close_matches(point, points, n=3, cutoff=0.3)
            raise TaskModelError(f"task model {name!r} has no cut point {point!r}; nearest: {near or points[:3]}; "
                                 f"valid: {[INPUT, *points]}")
        return point

    def names(self, cut: str) -> list[str]:
        net = self.model.network()
        return _fpn_names(net) if cut == FPN else _body_names(net, cut[len(PREFIX):])

    @property
    def norm(self) -> tuple[Any, Any]:
        import torch

        transform = self.model.network().transform
        return (torch.tensor(transform.image_mean).view(1, 3, 1, 1),
                torch.tensor(transform.image_std).view(1, 3, 1, 1))

    def to_unit(self, x: Any) -> Any:
        """The normalised, resized and padded batch mapped back to [0, 1]: its padding is the mean colour, so
        :meth:`from_unit` gives exactly the detector's batch."""
        mean, std = self.norm
        return x * std + mean

    def prepare(self, image: np.ndarray) -> Any:
        images, _ = self.model.network().transform([self.model.tensor(image)])
        return images.tensors

    def forward_to(self, x: Any, cut: str) -> dict[str, Any]:
        net = self.model.network()
        if cut == FPN:
            return dict(net.backbone(x))
        names, out = self.names(cut), {}
        for name, module in _body(net).named_children():
            x = module(x)
            if name in names:
                out[name] = x
            if PREFIX + name == cut:
                return out
        raise TaskModelError(f"no body child {cut!r}")

    def rest(self, cut: str, value: CutValue) -> Any:
        import torch
        from torchvision.models.detection.image_list import ImageList

        net = self.model.network()
        tensors = {k: torch.as_tensor(v).to(self.model.device) for k, v in value.tensors.items()}
        if cut == FPN:
            features = OrderedDict((name, tensors[name]) for name in self.names(cut))
        else:  # the remaining body children, then the FPN on their outputs and the given ones
            child = cut[len(PREFIX):]
            features = _fpn_features(net, {**tensors, **dict(_body_outputs(net, child, tensors[child]))})
        transform, (height, width) = net.transform, value.image_hw
        h, w = transform.resize(torch.zeros(3, height, width), None)[0].shape[-2:]
        k = transform.size_divisible
        first = next(iter(features.values()))
        images = ImageList(first.new_zeros((1, 3, -(-h // k) * k, -(-w // k) * k)), [(int(h), int(w))])
        proposals, _ = net.rpn(images, features)
        detections, _ = net.roi_heads(features, proposals, images.image_sizes)
        output = transform.postprocess(detections, images.image_sizes, [(height, width)])[0]
        return self.model.detections(output, (height, width))

    def mid(self, cut: str, y1: Any, point: str) -> list[Any]:
        """From a one-tensor cut (at or before ``body.layer1``) to a later body child, or the FPN maps at
        ``fpn`` / ``output``."""
        net, child = self.model.network(), cut[len(PREFIX):]
        if len(self.names(cut)) != 1:
            raise TaskModelError(f"task model {self.model.name!r}: the mid-model needs a one-tensor cut, "
                                 f"{cut!r} carries {self.names(cut)}")
        if point in (FPN, OUTPUT):
            return list(_fpn_features(net, dict(_body_outputs(net, child, y1))).values())
        for name, y in _body_outputs(net, child, y1):
            if PREFIX + name == point:
                return [y]
        raise TaskModelError(f"no body child {point!r} after {cut!r}")


@register_task_model
@dataclass
class TorchvisionDetector(TaskModel):
    """A torchvision COCO detector (Faster R-CNN, RetinaNet, FCOS, SSD, ...): image -> boxes.

    Fields: ``model`` a torchvision builder name (:data:`SUPPORTED_MODELS`); ``weights`` a
    member name of its weights enum (``"DEFAULT"``, ``"COCO_V1"``) or None (random
    init, seeded: plumbing tests only); ``weights_file`` an explicit checkpoint (a name
    looked up by ``find_weights``, or a path) holding the weights named by ``weights``;
    ``score_threshold`` drops lower scores after the model's own thresholds (0: keep all,
    as mAP wants); ``device`` a torch device; ``mask_threshold`` the mask probability
    cut; ``min_size``/``max_size`` the model's resize (pixels of the short/long side;
    None: the model's default, e.g. 800/1333); ``model_kwargs`` extra builder arguments
    (e.g. ``box_score_thresh``, ``detections_per_img``).
    """

    name: ClassVar[str] = "torchvision-detection"
    task: ClassVar[str] = "detection"
    with_masks: ClassVar[bool] = False
    transient: ClassVar[tuple[str, ...]] = ("_net",)
    adapter_class: ClassVar[type] = TorchvisionDetectorAdapter

    architecture: str = "fasterrcnn_resnet50_fpn"
    weights: str | None = "DEFAULT"
    weights_file: str | None = None
    score_threshold: float = 0.0
    device: str = "cpu"
    mask_threshold: float = 0.5
    min_size: int | None = None
    max_size: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_MODELS:
            raise ValueError(f"{self.name}: unknown torchvision model {self.architecture!r}; supported: "
                             f"{', '.join(SUPPORTED_MODELS)}")
        if self.with_masks and self.architecture not in MASK_MODELS:
            raise ValueError(f"{self.name}: {self.architecture!r} predicts no masks; "
                             f"use one of {sorted(MASK_MODELS)}")
        if self.architecture in FIXED_SIZE_MODELS and (self.min_size is not None or self.max_size is not None):
            raise ValueError(f"{self.name}: {self.architecture!r} resizes to a fixed size; "
                             "min_size/max_size do not apply")
        if not 0.0 <= self.mask_threshold < 1.0:
            raise ValueError(f"{self.name}: mask_threshold must be in [0, 1), got {self.mask_threshold}")
        names = self._category_names()
        self.categories = {int(cid): name for cid, name in zip(coco_category_ids(names), names) if cid > 0}

    # -- weights -----------------------------------------------------------------------------
    def weights_enum(self) -> Any:
        """The torchvision weights enum member named by ``weights`` (None when ``weights`` is None)."""
        return None if self.weights is None else weights_member(self, self.architecture, self.weights, ValueError)

    def _category_names(self) -> list[str]:
        from torchvision.models import get_model_weights

        member = self.weights_enum()
        if member is None:  # random init: same 91-way head and class order as the COCO weights
            member = get_model_weights(self.architecture)["COCO_V1"]
        return list(member.meta["categories"])

    def weights_path(self) -> Path | None:
        """The checkpoint file that will be loaded (None for random init); raises if it is missing."""
        if self.weights_file is not None:
            from vcm_plugin.weights import find_weights

            return find_weights(self.weights_file)
        member = self.weights_enum()
        if member is None:
            return None
        path = hub_checkpoint_path(member.url)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"task model {self.name!r} ({self.architecture}, weights {member}): weights file {path.name!r} is not "
                f"in torch.hub's cache folder {str(path.parent)!r} and cannot be downloaded offline. With internet, "
                f"torchvision fetches it from {member.url}; otherwise copy {path.name} into that folder "
                f"($TORCH_HOME/hub/checkpoints), or pass weights_file=<path>.")
        return path

    def identity(self) -> dict[str, Any]:
        """Name, params, the torchvision version and the weights (enum and URL, or the file's SHA-256)."""
        import torchvision

        ident = super().identity()
        ident["torchvision"] = torchvision.__version__
        member = self.weights_enum()
        if self.weights_file is not None:
            ident["weights"] = {"enum": None if member is None else str(member), "sha256": self.weights_sha256()}
        elif member is not None:
            ident["weights"] = {"enum": str(member), "url": member.url}
        else:
            ident["weights"] = {"random_init_seed": 0}
        return ident

    def for_shapes(self) -> TorchvisionDetector:
        """This model with random weights (``weights=None``): the same cut points and shapes, no checkpoint."""
        return dataclasses.replace(self, weights=None, weights_file=None)

    # -- model -------------------------------------------------------------------------------
    def _load(self) -> None:
        import torch
        from torchvision.models import get_model

        from vcm_plugin.weights import load_state_dict_safely

        sizes = {"min_size": self.min_size, "max_size": self.max_size}
        kwargs = {**self.model_kwargs, **{k: v for k, v in sizes.items() if v is not None}}
        member = self.weights_enum()
        path = self.weights_path()
        try:
            if path is None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    net = get_model(self.architecture, weights=None, weights_backbone=None, **kwargs)
            else:
                if member is not None and path.name == url_file_name(member.url):
                    check_hash_in_name(path)  # torchvision's own file (hub cache or copied): name carries its hash
                state = load_state_dict_safely(path)
                if member is None:
                    net = get_model(self.architecture, weights=None, weights_backbone=None, **kwargs)
                    net.load_state_dict(state)
                else:
                    net = build_with_state_dict(self.architecture, member, state, **kwargs)
        except TaskModelError:
            raise
        except (RuntimeError, TypeError, ValueError, KeyError) as exc:
            where = f" from {str(path)!r}" if path is not None else ""
            raise TaskModelError(f"task model {self.name!r}: cannot build {self.architecture!r}{where}: {exc}") from exc
        self._net = freeze(net).to(self.device)

    # -- inference ---------------------------------------------------------------------------
    def tensor(self, image: np.ndarray) -> Any:
        """(H, W, 3) uint8 RGB -> (3, H, W) float32 in [0, 1] on the model's device."""
        import torch

        image = check_image(image, self.name)
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(self.device, torch.float32) / 255

    def detections(self, output: dict[str, Any], image_hw: tuple[int, int]) -> Detections:
        """:func:`outputs_to_detections` with this model's category ids and thresholds."""
        return outputs_to_detections(output, coco_category_ids(self._category_names()), image_hw,
                                     self.score_threshold, self.mask_threshold if self.with_masks else None)

    def _predict(self, image: np.ndarray) -> Detections:
        """Run the detector on an (H, W, 3) uint8 RGB image (validated before any build)."""
        import torch

        x = self.tensor(image)
        self.load()
        with torch.inference_mode():
            return self.detections(self._net([x])[0], image.shape[:2])


@register_task_model
@dataclass
class TorchvisionSegmenter(TorchvisionDetector):
    """A torchvision Mask R-CNN: image -> boxes and instance masks (COCO RLE at the image size)."""

    name: ClassVar[str] = "torchvision-segmentation"
    task: ClassVar[str] = "segmentation"
    with_masks: ClassVar[bool] = True

    architecture: str = "maskrcnn_resnet50_fpn"


def build_with_state_dict(model: str, member: Any, state: dict[str, Any], **kwargs: Any) -> Any:
    """``get_model(model, weights=member)`` with ``member``'s state dict taken from ``state``.

    torchvision's builders fetch weights through ``member.get_state_dict()`` (a download
    or an unpickling of the hub cache); here that one call returns the already safely
    loaded ``state``, so the network is built exactly as torchvision builds it (including
    what the builders do besides loading, e.g. the BatchNorm eps of the v1 COCO weights).
    The method is set on the enum class (members are singletons, so the class is the only
    place a builder looks it up) and the class is restored afterwards: its own attribute put
    back, or the one set here deleted so that the inherited ``WeightsEnum`` method shows again.
    """
    from torchvision.models import get_model

    cls = type(member)

    def get_state_dict(self: Any, *args: Any, **kw: Any) -> dict[str, Any]:
        if self is not member:
            raise TaskModelError(f"unexpected weights request {self} while building {model} with {member}")
        return state

    with _BUILD_LOCK:
        own = cls.__dict__.get("get_state_dict", _ABSENT)
        cls.get_state_dict = get_state_dict
        try:
            return get_model(model, weights=member, **kwargs)
        finally:
            if own is _ABSENT:
                delattr(cls, "get_state_dict")
            else:
                cls.get_state_dict = own
