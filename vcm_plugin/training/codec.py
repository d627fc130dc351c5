"""``vcm train codec``: train a CompressAI image codec for rate + lambda * distortion.

The loss is CompressAI's ``RateDistortionLoss``: bits per pixel from the entropy
models' likelihoods plus ``lmbda * 255^2 * MSE`` (or ``lmbda * (1 - MS-SSIM)``), on
random crops (with horizontal flips) of the training images. Practice as in
CompressAI's training example: AdamW on the network, a separate Adam on the entropy
bottleneck's quantiles (``aux_loss``), gradient clipping, a cosine learning-rate
schedule with linear warm-up, and ``update(force=True)`` before any real coding.

Validation runs every ``val_every`` steps on held-out images with REAL bitstreams
(``compress``; rate = bytes of every string / pixels), PSNR on RGB; its loss ranks
checkpoints (``best.pt``). ``last.pt`` (model, optimizers, step, RNG) is written
atomically every ``checkpoint_every`` steps, so rerunning the same command after a
crash or kill -9 resumes from it. A non-finite loss stops training with
:class:`~vcm_plugin.training.checkpoints.TrainingError`, keeping the last good
checkpoint. The export (``model.pt``: weights-only state_dict after
``update(force=True)``, optionally stored as float16) is usable by the ``compressai``
codec with ``checkpoint: <path>`` and ``model: <architecture>``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vcm_plugin.images.io import IMAGE_SUFFIXES
from vcm_plugin.learned.models import KEEP_FLOAT32, with_default_bounds
from vcm_plugin.training.checkpoints import (
    ResumableRun,
    TrainingError,
    atomic_save,
    seed_everything,
)

EXPORT = "model.pt"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodecDataConfig(_Strict):
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


class RDTrainingConfig(_Strict):
    """What every rate-distortion trainer shares: data, schedule, optimisers, checkpoints, export."""

    data: CodecDataConfig
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


class CodecTrainConfig(RDTrainingConfig):
    """Schema of ``eval_configs/train/*.yaml`` for ``vcm train codec``."""

    kind: Literal["codec"] | None = Field(None, description="lets `vcm train CONFIG` find the trainer")
    output: str
    architecture: str = "bmshj2018-hyperprior"
    arch_params: dict[str, int] = Field(default_factory=lambda: {"N": 48, "M": 96})
    lmbda: float = Field(..., gt=0)
    distortion: Literal["mse", "ms-ssim"] = "mse"
    init_from: str | None = Field(None, description="start from this checkpoint's weights (e.g. another lambda)")


# -- data ------------------------------------------------------------------------------
def _expand(entries: list[str], where: str) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise TrainingError(f"{where}: folder {entry!r} contains no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(entry, recursive=True))
            if not matches:
                raise TrainingError(f"{where}: {entry!r} is not an image file, a folder or a glob that matches files")
            files += [m for m in matches if m.suffix.lower() in IMAGE_SUFFIXES]
    return files


def _is_under(path: Path, roots: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == r or r in resolved.parents for r in roots)


def resolve_images(data: CodecDataConfig, seed: int) -> tuple[list[Path], list[Path]]:
    """(train files, validation files): disjoint, none under ``exclude``; errors name the entry."""
    excluded = [Path(e).expanduser().resolve() for e in data.exclude]
    train = [p for p in _expand(data.train, "data.train") if not _is_under(p, excluded)]
    if data.val:
        val = [p for p in _expand(data.val, "data.val") if not _is_under(p, excluded)]
    else:
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


def load_images(files: list[Path], min_side: int, small: str = "pad") -> list[np.ndarray]:
    """Decode every file to uint8 RGB. Images with a side below ``min_side``: ``small`` = ``"error"``
    (a :class:`TrainingError` naming the file), ``"pad"`` (edge padding) or ``"skip"``."""
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
    import torch

    out = np.empty((batch, crop, crop, 3), np.uint8)
    for b in range(batch):
        image = images[rng.integers(len(images))]
        y = rng.integers(image.shape[0] - crop + 1)
        x = rng.integers(image.shape[1] - crop + 1)
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


# -- model and optimisation ------------------------------------------------------------
def lr_at(step: int, config: CodecTrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_fraction`` at ``steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_fraction
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizers(model: Any, config: CodecTrainConfig):
    """AdamW on the network parameters, Adam on the entropy bottlenecks' ``quantiles`` (aux loss)."""
    import torch

    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    optimizer = torch.optim.AdamW(main, lr=config.lr, weight_decay=config.weight_decay)
    aux_optimizer = torch.optim.Adam(aux, lr=config.aux_lr)
    return optimizer, aux_optimizer


def validate(model: Any, images: list[np.ndarray], config: CodecTrainConfig) -> dict[str, float]:
    """Real-bitstream validation: mean bpp (bytes of all strings / pixels), PSNR-RGB (dB), loss."""
    import torch
    import torch.nn.functional as F

    from vcm_plugin.images.metrics import psnr_rgb

    model.eval()
    model.update(force=True)
    factor = int(getattr(model, "downsampling_factor", 64))
    bits = pixels = 0
    psnrs, distortions = [], []
    with torch.no_grad():
        for image in images:
            h, w = image.shape[:2]
            x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
            xp = F.pad(x, (0, (-w) % factor, 0, (-h) % factor), mode="replicate")
            out = model.compress(xp)
            x_hat = model.decompress(out["strings"], out["shape"])["x_hat"][..., :h, :w].clamp(0, 1)
            bits += 8 * sum(len(s[0]) for s in out["strings"])
            pixels += h * w
            decoded = x_hat[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            psnrs.append(psnr_rgb(image, decoded))
            if config.distortion == "mse":
                distortions.append(255**2 * F.mse_loss(x_hat, x).item())
            else:
                from pytorch_msssim import ms_ssim

                distortions.append(1 - ms_ssim(x_hat, x, data_range=1.0, size_average=True).item()
                                   if min(h, w) > 160 else float("nan"))
    model.train()
    bpp = bits / pixels
    distortion = float(np.nanmean(distortions))
    return {"bpp": bpp, "psnr_rgb": float(np.mean(psnrs)), "distortion": distortion,
            "loss": bpp + config.lmbda * distortion}


# -- the loop ----------------------------------------------------------------------------
def _config_fingerprint(config: CodecTrainConfig) -> dict[str, Any]:
    """Fields that must not change when resuming (``steps`` may grow)."""
    return config.model_dump(exclude={"kind", "steps", "output", "checkpoint_every", "val_every", "threads"})


def export_model(model: Any, config: CodecTrainConfig, path: Path, extra: dict[str, Any]) -> Path:
    """Write a weights-only export after ``update(force=True)`` (float16 weights if configured)."""
    import copy

    import torch

    model = copy.deepcopy(model).eval()
    if config.export_dtype == "float16":  # round the weights first, so the tables match what is shipped
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    model.update(force=True)
    state = model.state_dict()
    if config.export_dtype == "float16":
        state = {k: (v.half() if v.is_floating_point() and not k.endswith(KEEP_FLOAT32) else v)
                 for k, v in state.items()}
    return atomic_save({"state_dict": state, "architecture": config.architecture,
                        "arch_params": dict(config.arch_params), "lmbda": config.lmbda,
                        "distortion": config.distortion, **extra}, path)


def train(config: CodecTrainConfig, output: Path, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) and export; returns the result record also written to ``result.json``."""
    import torch
    from compressai.losses import RateDistortionLoss
    from tqdm import tqdm

    from vcm_plugin.learned.models import build_model, import_compressai, model_from_state

    import_compressai()
    if config.threads:
        torch.set_num_threads(config.threads)
    output.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    train_files, val_files = resolve_images(config.data, config.seed)
    train_images = load_images(train_files, config.data.crop, config.data.small_images)
    val_images = [_centre_crop(im, config.data.max_val_pixels) for im in load_images(val_files, 16)]

    model = build_model(config.architecture, **config.arch_params)
    if config.init_from:
        from vcm_plugin.weights import load_state_dict_safely

        init = model_from_state(load_state_dict_safely(config.init_from), config.architecture, config.init_from)
        model.load_state_dict(with_default_bounds(init.state_dict(), model))
    model.train()
    optimizer, aux_optimizer = make_optimizers(model, config)
    criterion = RateDistortionLoss(lmbda=config.lmbda, metric=config.distortion)
    rng = np.random.default_rng(config.seed)
    run = ResumableRun(output, _config_fingerprint(config), model, optimizer, aux_optimizer, rng, quiet=quiet)

    def run_validation() -> None:
        metrics = validate(model, val_images, config)
        run.record_validation(metrics)
        if not quiet:
            tqdm.write(f"step {run.step}: val bpp {metrics['bpp']:.4f} PSNR {metrics['psnr_rgb']:.2f} dB "
                       f"loss {metrics['loss']:.4f} (best {run.best:.4f})")

    bar = tqdm(total=config.steps, initial=run.step, disable=quiet, desc="train codec", unit="step")
    while run.step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(run.step, config)
        x = random_batch(train_images, config.data.crop, config.data.batch_size, rng)
        out = model(x)
        losses = criterion(out, x)
        aux_loss = model.aux_loss()
        if not (torch.isfinite(losses["loss"]) and torch.isfinite(aux_loss)):
            bar.close()
            raise run.non_finite(losses["loss"].item(), aux_loss.item())
        run.step_optimizers(losses["loss"], aux_loss, config.clip_grad)
        bar.update(1)
        mse = ((out["x_hat"].detach().clamp(0, 1) - x) ** 2).mean().item()
        bar.set_postfix(loss=f"{losses['loss'].item():.3f}", bpp=f"{losses['bpp_loss'].item():.3f}",
                        psnr=f"{10 * math.log10(1 / max(mse, 1e-12)):.2f}", refresh=False)
        if run.step % config.val_every == 0 or run.step == config.steps:
            run_validation()
        if run.step % config.checkpoint_every == 0 or run.step == config.steps:
            run.save()
    bar.close()

    best_step = run.restore_best()
    wall = run.wall_s
    export_model(model, config, output / EXPORT, {"best_step": best_step})
    final = validate(model, val_images, config)
    result = {"export": str(output / EXPORT), "best_step": best_step, "steps": run.step,
              "wall_s": round(wall, 1), "val": final, "history": run.history, "train_images": len(train_files),
              "val_images": [str(p) for p in val_files], "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
              "config": config.model_dump(mode="json")}
    (output / "result.json").write_text(json.dumps(result, indent=2))
    return result


def train_from_config(config_path: str, overrides: list[str], output: str | None = None,
                      quiet: bool = False) -> int:
    """Entry point of ``vcm train codec CONFIG [key=value ...]``."""
    from vcm_plugin.config import load_model_config

    config = load_model_config(config_path, CodecTrainConfig, overrides)
    result = train(config, Path(output or config.output), quiet=quiet)
    if not quiet:
        val = result["val"]
        print(f"exported {result['export']} (best step {result['best_step']}): validation bpp {val['bpp']:.4f}, "
              f"PSNR-RGB {val['psnr_rgb']:.2f} dB, {result['wall_s']:.0f} s")
    return 0
