"""``vcm train codec``: a CompressAI image codec trained for rate + lambda * distortion.

CompressAI's ``RateDistortionLoss`` (bpp from the likelihoods + ``lmbda * 255^2 * MSE``, or
``lmbda * (1 - MS-SSIM)``) on random crops with horizontal flips, as CompressAI's example trains;
validation with REAL bitstreams. The export ``model.pt`` (weights only, after ``update(force=True)``,
optionally float16) is a ``checkpoint:`` of the ``compressai`` codec. :class:`RDTrainer` (optimisers,
schedule, data) is shared with the task codecs.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from vcm_plugin.config import StrictModel
from vcm_plugin.learned.models import KEEP_FLOAT32, with_default_bounds
from vcm_plugin.training.loop import Trainer, TrainingError, atomic_save

EXPORT = "model.pt"


class CodecDataConfig(StrictModel):
    """Training data: image files, folders (searched recursively) or globs; never evaluation images."""

    train: list[str]
    val: list[str] = Field(default_factory=list)
    val_count: int = Field(8, ge=1, description="held out from `train` when `val` is empty")
    exclude: list[str] = Field(default_factory=list, description="files or folders never used (e.g. eval sets)")
    crop: int = Field(128, ge=16)
    batch_size: int = Field(8, ge=1)
    max_train_images: int | None = Field(None, ge=1)
    max_val_pixels: int = Field(512 * 768, ge=1, description="validation images are centre-cropped to this area")
    small_images: Literal["error", "pad", "skip"] = Field(
        "error", description="training images smaller than `crop`: stop naming them, edge-pad, or leave them out")


class RDTrainingConfig(StrictModel):
    """What every rate-distortion trainer shares: data, schedule, optimisers, checkpoints, export."""

    data: CodecDataConfig
    output: str
    lmbda: float = Field(..., gt=0)
    steps: int = Field(..., ge=1)
    lr: float = Field(1e-4, gt=0)
    min_lr_fraction: float = Field(0.05, ge=0, le=1)
    warmup_steps: int = Field(100, ge=0)
    aux_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    clip_grad: float | None = Field(1.0, gt=0)
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    val_every: int = Field(500, ge=1)
    export_dtype: Literal["float32", "float16"] = "float32"
    device: str = Field("cpu", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
                        description="where training runs: cpu, cuda[:N], or auto (cuda when torch sees one, else "
                                    "cpu); exports and validation bitstreams are the same format either way")


class CodecTrainConfig(RDTrainingConfig):
    """Schema of ``eval_configs/train/*.yaml`` for ``vcm train codec``."""

    kind: Literal["codec"] | None = Field(None, description="lets `vcm train CONFIG` find the trainer")
    architecture: str = "bmshj2018-hyperprior"
    arch_params: dict[str, int] = Field(default_factory=lambda: {"N": 48, "M": 96})
    distortion: Literal["mse", "ms-ssim"] = "mse"
    init_from: str | None = Field(None, description="start from this checkpoint's weights (e.g. another lambda)")


def resolve_images(data: CodecDataConfig, seed: int) -> tuple[list[Path], list[Path]]:
    """(train files, validation files): disjoint, none under ``exclude``; errors name the entry.

    Files are found by :func:`vcm_plugin.datasets.list_image_files` (files, folders, globs)."""
    from vcm_plugin.datasets import DatasetError, list_image_files

    try:
        train = list_image_files(data.train, "data.train", data.exclude)
        val = list_image_files(data.val, "data.val", data.exclude)
    except DatasetError as exc:
        raise TrainingError(str(exc)) from exc
    if not data.val:
        order = np.random.default_rng(seed).permutation(len(train))
        held = set(order[:data.val_count].tolist())
        val = [p for i, p in enumerate(train) if i in held]
        train = [p for i, p in enumerate(train) if i not in held]
    overlap = {p.resolve() for p in train} & {p.resolve() for p in val}
    if overlap:
        raise TrainingError(f"data: {len(overlap)} images are in both train and val, e.g. {sorted(overlap)[0]}")
    if data.max_train_images:
        train = train[:data.max_train_images]
    if not train or not val:
        raise TrainingError(f"data: {len(train)} training and {len(val)} validation images; need at least one each")
    return train, val


#: decoded image lists kept by :func:`load_images` in this process (a pool worker training run after run
#: decodes its data once): at most this many lists, each of at most ``_CACHE_PIXELS`` pixels
_CACHE: dict[tuple, list[np.ndarray]] = {}
_CACHE_LISTS, _CACHE_PIXELS = 4, 64 * 2**20


def load_images(files: list[Path], min_side: int, small: str = "pad") -> list[np.ndarray]:
    """Decode every file to uint8 RGB. Images with a side below ``min_side`` pixels: ``small`` = ``"error"``
    (a :class:`TrainingError` naming the file), ``"pad"`` (edge padding) or ``"skip"``.

    The result is kept in this process for the next call with the same files (same size and modification
    time), ``min_side`` and ``small``; its arrays are read-only."""
    key = (tuple((str(p), *_stat(p)) for p in files), min_side, small)
    if key in _CACHE:
        return _CACHE[key]
    images = _decode(files, min_side, small)
    if sum(im.shape[0] * im.shape[1] for im in images) <= _CACHE_PIXELS:
        for im in images:
            im.flags.writeable = False
        while len(_CACHE) >= _CACHE_LISTS:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = images
    return images


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)  # decoding names the file
    return (st.st_size, st.st_mtime_ns)


def _decode(files: list[Path], min_side: int, small: str) -> list[np.ndarray]:
    from vcm_plugin.images.io import read_image

    images = []
    for path in files:
        image = read_image(path)
        h, w = image.shape[:2]
        if h < min_side or w < min_side:
            if small == "error":
                raise TrainingError(f"training image {str(path)!r} is {w}x{h} pixels, smaller than the {min_side}-"
                                    f"pixel crop; lower data.crop, or set data.small_images: pad (edge padding) "
                                    f"or skip")
            if small == "skip":
                continue
            image = np.pad(image, ((0, max(0, min_side - h)), (0, max(0, min_side - w)), (0, 0)), mode="edge")
        images.append(image)
    if not images:
        raise TrainingError(f"no training image is at least {min_side} pixels on each side (data.small_images: skip)")
    return images


def random_batch(images: list[np.ndarray], crop: int, batch: int, rng: np.random.Generator):
    """A (B, 3, crop, crop) float tensor in [0, 1]: random image, random crop, random horizontal flip."""
    out = np.empty((batch, crop, crop, 3), np.uint8)
    for b in range(batch):
        image = images[rng.integers(len(images))]
        y, x = (rng.integers(image.shape[i] - crop + 1) for i in (0, 1))
        patch = image[y:y + crop, x:x + crop]
        out[b] = patch[:, ::-1] if rng.random() < 0.5 else patch
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def _centre_crop(image: np.ndarray, max_pixels: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h * w <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (h * w))
    ch, cw = max(16, int(h * scale)), max(16, int(w * scale))
    y, x = (h - ch) // 2, (w - cw) // 2
    return image[y:y + ch, x:x + cw]


def resolve_device(name: str) -> torch.device:
    """The torch device of a config's ``device`` (``auto``: the first CUDA device when torch sees one, else
    the CPU); a CUDA device that torch does not see is a :class:`TrainingError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= seen:
        raise TrainingError(f"device {name!r}: torch sees {seen} CUDA device(s) (torch built with CUDA: "
                            f"{torch.version.cuda is not None}); use device: cpu or auto")
    return device


def lr_at(step: int, config: RDTrainingConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_fraction`` at ``steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_fraction
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizers(model: Any, config: RDTrainingConfig) -> tuple[Any, Any]:
    """AdamW on the network parameters, Adam on the entropy bottlenecks' ``quantiles`` (aux loss)."""
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return (torch.optim.AdamW(main, lr=config.lr, weight_decay=config.weight_decay),
            torch.optim.Adam(aux, lr=config.aux_lr))


def exported_state(model: Any, dtype: str, keep_float32: tuple[str, ...] = KEEP_FLOAT32) -> dict[str, Any]:
    """The ``state_dict`` of a copy of ``model`` after ``update(force=True)``; with ``dtype`` float16 its weights
    are rounded first (so the tables match what is shipped) and stored as float16, but for ``keep_float32``."""
    import copy

    model = copy.deepcopy(model).cpu().eval()  # exports hold CPU tensors, whatever device trained
    if dtype == "float16":
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    model.update(force=True)
    state = model.state_dict()
    if dtype == "float16":
        state = {k: (v.half() if v.is_floating_point() and not k.endswith(keep_float32) else v)
                 for k, v in state.items()}
    return state


#: Config keys a resumed run may change (they do not change what is learned so far).
RESUMABLE = {"kind", "steps", "output", "checkpoint_every", "val_every", "threads", "device"}


class RDTrainer(Trainer):
    """What the rate-distortion trainers share: seeding, data, AdamW + aux Adam with clipping, warm-up + cosine lr,
    best-by-validation-loss, the result record, the device (``self.device``: batches and the model live there;
    :meth:`setup_optimizers` moves the model). Subclasses build ``model``, call :meth:`setup_optimizers` and
    define ``export(path, best_step)``."""

    def __init__(self, config: RDTrainingConfig, tags: dict[str, Any] | None = None) -> None:
        super().__init__(config, RESUMABLE, tags)
        self.device = resolve_device(config.device)
        self.max_iter = config.steps
        self.checkpoint_every, self.val_every = (config.checkpoint_every,), (config.val_every,)
        self.rng = np.random.default_rng(config.seed)
        data = config.data  # validation images centre-cropped to max_val_pixels
        self.train_files, self.val_files = resolve_images(data, config.seed)
        self.train_images = load_images(self.train_files, data.crop, data.small_images)
        self.val_images = [_centre_crop(im, data.max_val_pixels) for im in load_images(self.val_files, 16)]

    def setup_optimizers(self) -> None:
        self.model.to(self.device)
        self.optimizers = dict(zip(("optimizer", "aux_optimizer"), make_optimizers(self.model.train(), self.config)))

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.config)

    def optimize(self, loss: Any, aux_loss: Any) -> None:
        """``loss`` through the main optimizer (its parameters clipped to ``clip_grad``), ``aux_loss`` through the
        aux optimizer."""
        optimizer, aux_optimizer = self.optimizers["optimizer"], self.optimizers["aux_optimizer"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_grad:  # only the main parameters: a stale aux gradient must not scale the clipping
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                           self.config.clip_grad)
        optimizer.step()
        aux_optimizer.zero_grad(set_to_none=True)
        aux_loss.backward()
        aux_optimizer.step()

    def finish(self) -> dict[str, Any]:
        """The best model exported to ``model.pt`` and validated again; the ``result.json`` record."""
        best_step = self.restore_best()
        wall = self.wall_s
        self.export(self.output / EXPORT, best_step)
        last = self.history[-1] if self.history else {}
        # the weights just validated at the last step are the best: their validation is not run again
        val = ({k: v for k, v in last.items() if k != "step"} if best_step == self.step == last.get("step")
               else self.validate())
        return {"export": str(self.output / EXPORT), "best_step": best_step, "steps": self.step,
                "wall_s": round(wall, 1), "val": val, "history": self.history,
                "train_images": len(self.train_files), "val_images": [str(p) for p in self.val_files],
                "threads": torch.get_num_threads(), "device": device_name(self.device),
                "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
                "config": self.config.model_dump(mode="json")}


def device_name(device: torch.device) -> str:
    """'cpu' or 'cuda:0 (NVIDIA ...)' for the records."""
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"


class CodecTrainer(RDTrainer):
    """``vcm train codec``: a CompressAI image model, CompressAI's ``RateDistortionLoss``."""

    desc, Config = "train codec", CodecTrainConfig

    def __init__(self, config: CodecTrainConfig, command: str = "") -> None:
        from vcm_plugin.learned.models import build_model, import_compressai, model_from_state

        import_compressai()  # first: quietly
        from compressai.losses import RateDistortionLoss

        super().__init__(config)
        self.model = build_model(config.architecture, **config.arch_params)
        if config.init_from:
            from vcm_plugin.weights import load_state_dict_safely

            init = model_from_state(load_state_dict_safely(config.init_from), config.architecture, config.init_from)
            self.model.load_state_dict(with_default_bounds(init.state_dict(), self.model))
        self.setup_optimizers()
        self.criterion = RateDistortionLoss(lmbda=config.lmbda, metric=config.distortion)

    def run_step(self) -> dict[str, float]:
        x = random_batch(self.train_images, self.config.data.crop, self.config.data.batch_size, self.rng)
        x = x.to(self.device)
        out = self.model(x)
        losses = self.criterion(out, x)
        aux_loss = self.model.aux_loss()
        self.optimize(losses["loss"], aux_loss)
        mse = ((out["x_hat"].detach().clamp(0, 1) - x) ** 2).mean().item()
        return {"loss": losses["loss"].item(), "aux": aux_loss.item(), "bpp": losses["bpp_loss"].item(),
                "psnr": 10 * math.log10(1 / max(mse, 1e-12))}

    def validate(self) -> dict[str, float]:
        """Real-bitstream validation: mean bpp (bytes of all strings / pixels), PSNR-RGB (dB), loss."""
        from vcm_plugin.images.metrics import psnr_rgb

        model, config = self.model.eval(), self.config
        model.update(force=True)
        factor = int(getattr(model, "downsampling_factor", 64))
        bits = pixels = 0
        psnrs, distortions = [], []
        with torch.no_grad():
            for image in self.val_images:
                h, w = image.shape[:2]
                x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
                x = x.to(self.device)
                xp = F.pad(x, (0, (-w) % factor, 0, (-h) % factor), mode="replicate")
                out = model.compress(xp)
                x_hat = model.decompress(out["strings"], out["shape"])["x_hat"][..., :h, :w].clamp(0, 1)
                bits += 8 * sum(len(s[0]) for s in out["strings"])
                pixels += h * w
                decoded = x_hat[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                psnrs.append(psnr_rgb(image, decoded))
                if config.distortion == "mse":
                    distortions.append(255**2 * F.mse_loss(x_hat, x).item())
                else:
                    from pytorch_msssim import ms_ssim

                    distortions.append(1 - ms_ssim(x_hat, x, data_range=1.0, size_average=True).item()
                                       if min(h, w) > 160 else float("nan"))
        model.train()
        bpp, distortion = bits / pixels, float(np.nanmean(distortions))
        return {"bpp": bpp, "psnr_rgb": float(np.mean(psnrs)), "distortion": distortion,
                "loss": bpp + config.lmbda * distortion}

    def export(self, path: Path, best_step: int) -> None:
        config = self.config
        atomic_save({"state_dict": exported_state(self.model, config.export_dtype),
                     "architecture": config.architecture, "arch_params": dict(config.arch_params),
                     "lmbda": config.lmbda, "distortion": config.distortion, "best_step": best_step}, path)


def train(config: CodecTrainConfig, output: Path) -> dict[str, Any]:
    """Train (or resume) into ``output`` and export; the result."""
    return CodecTrainer(config.model_copy(update={"output": str(output)})).train()
