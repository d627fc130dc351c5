"""detectron2 model-zoo detectors and instance segmenters as task models (optional).

detectron2 is not on PyPI under its name: ``make install`` builds detectron2-cdo 0.5 (upstream
v0.5 renamed) pure-Python with ``patches/detectron2-cdo-0.5.patch``; with internet, upstream
detectron2 (with its C++ ops) works the same. This module imports without it; only
building a :class:`Detectron2Model` needs it, and then fails with a
:class:`~vcm_plugin.errors.TaskModelError` that says how to install it.

Inference follows detectron2's ``DefaultPredictor``: the config's test-time resize
(``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), the channel order ``INPUT.FORMAT``
(our images are RGB; BGR models get them flipped), original-size outputs. Contiguous
class indices are mapped to the dataset's category ids (COCO ids 1..90 for COCO configs).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from vcm_plugin.errors import TaskModelError, WeightsNotFoundError
from vcm_plugin.tasks.base import INPUT, TaskModel, check_image
from vcm_plugin.tasks.predictions import Detections
from vcm_plugin.tasks.registry import register_task_model
from vcm_plugin.tasks.split import CutValue, ModelAdapter
from vcm_plugin.tasks.torchvision_backend import masks_to_rle, to_numpy

logger = logging.getLogger(__name__)
INSTALL_HINT = ("detectron2 is not installed: pip install 'vcm-plugin[detectron2]' plus detectron2 itself, either "
                "offline from the package index as `make install` does (detectron2-cdo 0.5 patched by "
                "patches/detectron2-cdo-0.5.patch, pure Python: `make detectron2`), or with internet from its "
                "repository: pip install 'git+https://github.com/facebookresearch/detectron2.git'")


def detectron2_available() -> bool:
    """True when ``import detectron2`` works here."""
    try:
        importlib.import_module("detectron2")
    except ImportError:
        return False
    return True


def _require_detectron2() -> None:
    try:
        importlib.import_module("detectron2")
    except ImportError as exc:
        raise TaskModelError(f"task model 'detectron2': {INSTALL_HINT} ({exc})") from exc


def is_segmentation_config(config: str) -> bool:
    """Guess from a model-zoo config name whether it predicts instance masks (confirmed by ``MODEL.MASK_ON``)."""
    lowered = config.lower()
    return "instancesegmentation" in lowered or "panopticsegmentation" in lowered or "mask_rcnn" in lowered


def instances_to_detections(instances: Any, category_ids: Sequence[int] | np.ndarray, score_threshold: float = 0.0,
                            with_masks: bool | None = None) -> Detections:
    """Convert detectron2 ``Instances`` (one image, original size) to :class:`Detections`.

    Reads ``pred_boxes.tensor`` (N, 4) xyxy pixels, ``scores`` (N,), ``pred_classes`` (N,)
    contiguous indices and, if present, ``pred_masks`` (N, H, W) bool; anything with those
    attributes works (tensors or arrays). ``category_ids[i]`` is the category id of
    contiguous class ``i``. Boxes are clipped to ``instances.image_size`` (H, W) when it
    exists. ``with_masks``: None keeps masks when present, True requires them, False drops them.
    """
    ids = np.asarray(category_ids, np.int64).reshape(-1)
    boxes = to_numpy(instances.pred_boxes.tensor).astype(np.float32).reshape(-1, 4)
    scores = to_numpy(instances.scores).astype(np.float32).reshape(-1)
    classes = to_numpy(instances.pred_classes).astype(np.int64).reshape(-1)
    if len(classes) and (classes.min() < 0 or classes.max() >= len(ids)):
        raise TaskModelError(f"predicted class index {int(classes.max())} is outside the model's {len(ids)} classes: "
                             "the config's NUM_CLASSES and its dataset's categories disagree")
    keep = scores >= score_threshold
    boxes = boxes[keep]
    size = getattr(instances, "image_size", None)
    if size is not None:
        height, width = int(size[0]), int(size[1])
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    raw_masks = getattr(instances, "pred_masks", None)
    if with_masks and raw_masks is None:
        raise TaskModelError("the model returned no pred_masks, but masks were asked for")
    masks = None
    if raw_masks is not None and with_masks is not False:
        masks = masks_to_rle(to_numpy(raw_masks).astype(bool)[keep])
    return Detections(boxes, scores[keep], ids[classes[keep]], masks)


RANDOM = "random"  # weights_file for random weights (shapes, tests)
RANDOM_SEED = 0  # torch seed of the random weights: the same network in every process
FPN = "fpn"  # the cut after the FPN: P2..P6, the FCM common test conditions' split point


class _Given(nn.Module):
    """A stand-in for the FPN's bottom-up network that returns features computed elsewhere (decoded)."""

    def __init__(self, features: dict[str, Any]) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Any) -> dict[str, Any]:
        return self.features


class Detectron2Adapter(ModelAdapter):
    """A detectron2 R-CNN with an FPN backbone cut after its stem, a bottom-up stage (``res2`` .. ``res5``) or
    after the FPN (``fpn``: ``p2`` .. ``p6``, the FCM CTC point for X101); CompressAI-Vision's
    ``forward_after_c2`` is the ``res2`` cut. A cut value carries every tensor the rest reads (a stage cut:
    that stage and the earlier stages the FPN reads); detectron2 itself is not patched: the FPN runs on given
    bottom-up features through a shallow copy whose bottom-up module returns them.
    """

    def _backbone(self) -> Any:
        backbone = self.model.network().backbone
        if not hasattr(backbone, "bottom_up") or not hasattr(backbone, "lateral_convs"):
            raise TaskModelError(f"task model 'detectron2' ({self.model.config}): cut points need an FPN backbone, "
                                 f"this config has {type(backbone).__name__}")
        return backbone

    def points(self) -> list[str]:
        return [INPUT, "stem", *self._backbone().bottom_up.stage_names, FPN]

    def cut_points(self) -> list[str]:
        return self.points()

    def check_cut(self, point: str) -> str:
        if point not in (points := self.points()):
            near = difflib.get_close_matches(point, points, n=3, cutoff=0.3)
            raise TaskModelError(f"task model 'detectron2' ({self.model.config}) has no cut point {point!r}; "
                                 f"nearest: {near or points[:3]}; valid: {points}")
        return point

    def names(self, cut: str) -> list[str]:
        fpn = self._backbone()
        if cut == FPN:
            return list(fpn._out_features)
        if cut == "stem":
            return ["stem"]
        stages = fpn.bottom_up.stage_names
        return [s for s in stages[:stages.index(cut) + 1] if s in fpn.in_features or s == cut]

    def prepare(self, image: np.ndarray) -> Any:
        return self.model.network().preprocess_image([{"image": self.model.tensor(image)}]).tensor

    def forward_to(self, x: Any, cut: str) -> dict[str, Any]:
        fpn = self._backbone()
        if cut == FPN:
            return dict(fpn(x))
        bottom_up = fpn.bottom_up
        out = {"stem": bottom_up.stem(x)}
        x = out["stem"]
        for name, stage in zip(bottom_up.stage_names, bottom_up.stages, strict=True):
            if cut == "stem":
                break
            x = out[name] = stage(x)
            if name == cut:
                break
        return {name: out[name] for name in self.names(cut)}

    def rest(self, cut: str, value: CutValue) -> Any:
        import torch
        from detectron2.structures import ImageList

        net, fpn = self.model.network(), self._backbone()
        tensors = {k: torch.as_tensor(v).to(self.model.device) for k, v in value.tensors.items()}
        if cut != FPN:  # finish the bottom-up network, then the FPN on the given features
            stages = list(zip(fpn.bottom_up.stage_names, fpn.bottom_up.stages, strict=True))
            x, after = tensors[cut], [name for name, _ in stages].index(cut) + 1 if cut != "stem" else 0
            for name, stage in stages[after:]:
                x = tensors[name] = stage(x)
            given = copy.copy(fpn)
            given._modules = {**fpn._modules, "bottom_up": _Given(tensors)}
            tensors = given(None)
        height, width = value.image_hw
        new_h, new_w = self.model.resized_hw(height, width)
        first = next(iter(tensors.values()))
        images = ImageList(first.new_zeros(1, 3, new_h, new_w), [(new_h, new_w)])
        proposals, _ = net.proposal_generator(images, tensors, None)
        results, _ = net.roi_heads(images, tensors, proposals, None)
        output = net._postprocess(results, [{"height": height, "width": width}], images.image_sizes)[0]
        return self.model.to_detections(output["instances"].to("cpu"))

    def mid(self, cut: str, y1: Any, point: str) -> list[Any]:
        raise TaskModelError("task model 'detectron2': distillation through its mid-model (learned feature / direct "
                             "codecs) is not supported yet; feature codecs such as fcm-vvc work at every cut point")


@register_task_model
@dataclass
class Detectron2Model(TaskModel):
    """A detectron2 model-zoo model: image -> boxes (and masks for Mask R-CNN configs).

    ``config``: a model-zoo config name (``"COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"``)
    or a path to a yacs ``.yaml`` config; ``weights_file``: a checkpoint (a name looked up
    by ``find_weights``, or a path; ``"random"``: random weights, for shapes and tests), else the
    model zoo's URL, which detectron2 downloads and caches (needs internet);
    ``search_path`` folders searched first (the config's
    ``weights.search_path`` passes them); ``score_threshold`` drops lower scores after the
    config's own ``SCORE_THRESH_TEST``; ``device`` a torch device; ``config_overrides``
    ``KEY VALUE`` pairs for ``cfg.merge_from_list``; ``allow_partial`` accepts (with a warning) a
    checkpoint that leaves model parameters unloaded or mis-shaped, an error otherwise.
    ``task`` is ``"segmentation"`` for configs with ``MODEL.MASK_ON``, else ``"detection"``.
    """

    name: ClassVar[str] = "detectron2"
    task: ClassVar[str] = "detection"
    transient: ClassVar[tuple[str, ...]] = ("_model", "_cfg", "_aug", "_category_ids")
    adapter_class: ClassVar[type] = Detectron2Adapter

    config: str = "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
    weights_file: str | None = None
    score_threshold: float = 0.0
    device: str = "cpu"
    config_overrides: list[str] = field(default_factory=list)
    search_path: list[str] | None = None
    allow_partial: bool = False

    def __post_init__(self) -> None:
        _require_detectron2()
        if len(self.config_overrides) % 2:
            raise ValueError(f"detectron2: config_overrides must be KEY VALUE pairs, got {self.config_overrides}")
        self.task = "segmentation" if is_segmentation_config(self.config) else "detection"  # type: ignore[misc]

    def identity(self) -> dict[str, Any]:
        """Name, params, the detectron2 version and the weights (file SHA-256, or the model-zoo URL)."""
        import detectron2

        ident = super().identity()
        ident["params"].pop("search_path")  # where the weights are found is not what they are
        ident["detectron2"] = detectron2.__version__
        ident["weights"] = {"url": self._weights()} if self.weights_file is None else \
            {"random": True} if self.weights_file == RANDOM else {"sha256": self.weights_sha256()}
        return ident

    def weights_path(self) -> Path | None:
        """``weights_file`` found through the weights search path (None: the model zoo's checkpoint)."""
        from vcm_plugin.weights import find_weights

        return None if self.weights_file in (None, RANDOM) else find_weights(self.weights_file, self.search_path)

    def for_shapes(self) -> Detectron2Model:
        """This model with random weights (``weights_file="random"``): the same cut points and shapes, no checkpoint."""
        return dataclasses.replace(self, weights_file=RANDOM)

    def _weights(self) -> str:
        """The weights file (:meth:`weights_path`), else the model zoo's checkpoint URL."""
        path = self.weights_path()
        return str(path) if path is not None else \
            self._zoo("get_checkpoint_url", "has no model-zoo checkpoint: pass weights_file")

    def _zoo(self, getter: str, failure: str) -> str:
        """``detectron2.model_zoo.<getter>(config)`` (a config file or checkpoint URL); a TaskModelError
        saying ``failure`` if the config is not in the model zoo."""
        from detectron2 import model_zoo

        try:
            return getattr(model_zoo, getter)(self.config)
        except RuntimeError as exc:
            raise TaskModelError(f"detectron2 config {self.config!r} {failure} ({exc})") from exc

    def _load(self) -> None:
        _require_detectron2()
        import torch
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        if self.config.endswith(".py"):
            raise TaskModelError(f"detectron2 config {self.config!r}: LazyConfig (.py) configs are not supported; "
                                 "use a yacs .yaml config")
        config_file = Path(self.config).expanduser()
        cfg = get_cfg()
        cfg.merge_from_file(str(config_file) if config_file.is_file()
                            else self._zoo("get_config_file", "is neither a file nor in the model zoo"))
        cfg.merge_from_list(self._checked_overrides(cfg))
        cfg.MODEL.DEVICE = self.device
        cfg.MODEL.WEIGHTS = "" if self.weights_file == RANDOM else self._weights()
        cfg.freeze()
        self._category_ids = _dataset_category_ids(cfg)
        if self.weights_file == RANDOM:  # seeded: every process (pool workers, the fcm encoder) builds the same network
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model = build_model(cfg)
        else:
            model = build_model(cfg)
        model.eval()
        if self.weights_file == RANDOM:
            logger.warning("task model 'detectron2' (%s): random weights (weights_file=random, seed %d)", self.config,
                           RANDOM_SEED)
            self._finish_load(cfg, model)
            return
        try:
            checkpointer = DetectionCheckpointer(model)
            incompatible = checkpointer._load_model(
                checkpointer._load_file(checkpointer.path_manager.get_local_path(cfg.MODEL.WEIGHTS)))
        except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as exc:
            if self.weights_file is None:
                raise WeightsNotFoundError(
                    f"task model 'detectron2' ({self.config}): cannot load the model-zoo checkpoint "
                    f"{cfg.MODEL.WEIGHTS} (detectron2 downloads and caches it; offline, download it elsewhere and "
                    f"pass weights_file=<path>): {exc}") from exc
            raise TaskModelError(f"task model 'detectron2' ({self.config}): cannot load weights "
                                 f"{cfg.MODEL.WEIGHTS!r}: {exc}") from exc
        self._check_loaded(incompatible, cfg.MODEL.WEIGHTS)
        self._finish_load(cfg, model)

    def _finish_load(self, cfg: Any, model: Any) -> None:
        import detectron2.data.transforms as T

        self.task = "segmentation" if cfg.MODEL.MASK_ON else "detection"  # type: ignore[misc]
        self._aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self._cfg = cfg
        self._model = model  # last: load() tests the first transient attribute

    def _checked_overrides(self, cfg: Any) -> list[str]:
        """``config_overrides`` as yacs takes them, each key and value checked first: a key the config lacks
        (nearest ones named) or a value of another type than the key's is a TaskModelError (yacs: a bare error)."""
        pairs = list(self.config_overrides)
        for key, raw in zip(pairs[::2], pairs[1::2], strict=True):
            node, parts = cfg, str(key).split(".")
            for i, part in enumerate(parts):
                if not hasattr(node, "keys") or part not in node:
                    known = [k for k in node.keys()] if hasattr(node, "keys") else []
                    near = difflib.get_close_matches(part, known, n=3)
                    where = ".".join(parts[:i]) or "the top level"
                    raise TaskModelError(f"detectron2 config_overrides: no config key {key!r} ({part!r} is not in "
                                         f"{where}; nearest: {near or sorted(known)[:5]})")
                node = node[part]
            value = type(cfg)._decode_cfg_value(raw)  # how yacs reads it (a literal, else a str)
            if not isinstance(value, type(node)) and not {type(value), type(node)} <= {list, tuple}:
                raise TaskModelError(f"detectron2 config_overrides: {key} expects a {type(node).__name__} "
                                     f"(default {node!r}), got {raw!r} ({type(value).__name__})")
        return pairs

    def _check_loaded(self, incompatible: Any, weights: str) -> None:
        """detectron2 only logs parameters a checkpoint leaves unloaded: an error naming them unless allow_partial."""
        problems = [f"{what} ({len(keys)}): {', '.join(map(str, keys[:5]))}{' ...' if len(keys) > 5 else ''}"
                    for what, keys in (("missing", incompatible.missing_keys),
                                       ("unexpected", incompatible.unexpected_keys),
                                       ("wrong shape", [k for k, *_ in incompatible.incorrect_shapes])) if keys]
        if not problems:
            return
        message = (f"task model 'detectron2' ({self.config}): checkpoint {weights!r} does not fit the model: "
                   + "; ".join(problems))
        if not self.allow_partial:
            raise TaskModelError(message + " (a checkpoint of another architecture? allow_partial=true accepts it)")
        logger.warning("%s; allow_partial: the other parameters keep their random initial values", message)

    def tensor(self, image: np.ndarray) -> Any:
        """(H, W, 3) uint8 RGB -> the (3, H', W') float tensor detectron2's predictor feeds: the config's channel
        order, resized by the test-time ResizeShortestEdge."""
        import torch

        image = check_image(image, self.name)
        self.load()
        pixels = image[:, :, ::-1] if self._cfg.INPUT.FORMAT == "BGR" else image
        pixels = self._aug.get_transform(pixels).apply_image(np.ascontiguousarray(pixels))
        return torch.as_tensor(np.ascontiguousarray(pixels.astype(np.float32).transpose(2, 0, 1))).to(self.device)

    def resized_hw(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) in pixels the test-time resize gives an image of ``height`` x ``width``."""
        self.load()
        transform = self._aug.get_transform(np.zeros((height, width, 1), np.uint8))
        return int(transform.new_h), int(transform.new_w)

    def to_detections(self, instances: Any) -> Detections:
        """detectron2 ``Instances`` at the original size -> :class:`Detections` (dataset category ids)."""
        return instances_to_detections(instances, self._category_ids, self.score_threshold,
                                       with_masks=self.task == "segmentation")

    def _predict(self, image: np.ndarray) -> Detections:
        """Run the model on an (H, W, 3) uint8 RGB image."""
        import torch

        tensor, (height, width) = self.tensor(image), image.shape[:2]
        with torch.inference_mode():
            output = self._model([{"image": tensor, "height": height, "width": width}])[0]
        return self.to_detections(output["instances"].to("cpu"))

def _dataset_category_ids(cfg: Any) -> np.ndarray:
    """Contiguous class index -> dataset category id for a detectron2 config.

    Uses the metadata of the config's first test dataset (``thing_dataset_id_to_contiguous_id``,
    registered by detectron2 for its builtin COCO datasets); an 80-class model without
    such metadata is taken to be COCO (ids in ascending order, as detectron2 assigns them).
    """
    from detectron2.data import MetadataCatalog

    from vcm_plugin.tasks.coco_names import COCO80_IDS

    if cfg.DATASETS.TEST:
        mapping = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_dataset_id_to_contiguous_id", None)
        if mapping:
            ids = np.zeros(len(mapping), np.int64)
            for dataset_id, contiguous in mapping.items():
                ids[contiguous] = dataset_id
            return ids
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES if cfg.MODEL.META_ARCHITECTURE == "RetinaNet" \
        else cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if num_classes == len(COCO80_IDS):
        return np.asarray(COCO80_IDS, np.int64)
    raise TaskModelError(f"detectron2 config: {num_classes} classes and no dataset metadata mapping them to "
                         f"category ids (DATASETS.TEST = {list(cfg.DATASETS.TEST)})")
