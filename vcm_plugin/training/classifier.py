"""``vcm train classifier CONFIG [key=value ...]``: train the project's CIFAR-10 VGG-style classifier.

Data: the ``cifar10`` dataset at ``data``, decoded once into a uint8 tensor. A seeded
``val_images`` hold-out of the TRAIN split selects the best model (``best.pt``, by top-1);
the test split scores that model once, at the end. Batch order and augmentation are pure
functions of (seed, step), so a rerun after a kill -9 resumes bit for bit (same ``threads``);
a larger ``steps``/``epochs`` extends a finished run, the LR schedule stretched to the new
length. Outputs: ``last.pt``, ``best.pt``, the weights-only ``export`` (state_dict,
architecture, mean/std, class names), ``result.json`` and ``zoo_card.yaml`` (a draft zoo card).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from vcm_plugin.config import StrictModel
from vcm_plugin.tasks.cifar_vgg import CIFAR10_CLASSES, EXPORT_FORMAT, VGGConfig, build_cifar_vgg
from vcm_plugin.training.loop import BEST, Trainer, TrainingError, atomic_save, load_checkpoint

#: Keys that may change between a run and its resumption (they do not change what is learned so far).
RESUMABLE_CHANGES = {"kind", "epochs", "steps", "threads", "output", "checkpoint_every", "export", "max_test_images",
                     "eval_batch_size"}


class AugmentConfig(StrictModel):
    """``crop_padding`` pixels of zero padding before a random 32x32 crop (0: none); ``hflip`` random flips."""

    crop_padding: int = Field(default=4, ge=0)
    hflip: bool = True


class ClassifierTrainConfig(StrictModel):
    """The ``vcm train classifier`` config (unknown keys are errors). ``lr`` is the peak learning rate;
    ``warmup`` the fraction of steps of the one-cycle warm-up; ``steps`` (optimizer steps) overrides
    ``epochs``; ``threads`` torch CPU threads; ``checkpoint_every`` steps between ``last.pt`` saves."""

    kind: Literal["classifier"] | None = Field(None, description="lets `vcm train CONFIG` find the trainer")
    name: str = "cifar10-vgg"
    data: str = Field(default_factory=lambda: f"{os.environ.get('VCM_SHARED', '../shared')}/data/cifar10")
    train_split: str = "train"
    test_split: str = "test"
    max_images: int | None = Field(default=None, ge=2)
    max_test_images: int | None = Field(default=None, ge=1)
    val_images: int = Field(default=1000, ge=1)
    widths: list[int] = Field(default_factory=lambda: list(VGGConfig().widths))
    convs: list[int] = Field(default_factory=lambda: list(VGGConfig().convs))
    dropout: float = Field(default=0.1, ge=0, lt=1)
    epochs: int = Field(default=30, ge=1)
    steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=128, ge=2)
    eval_batch_size: int = Field(default=500, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = Field(default=0.15, ge=0, lt=1)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    grad_clip: float | None = Field(default=5.0, gt=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    amp: Literal["bf16", "fp32"] = "bf16"
    seed: int = Field(default=0, ge=0)
    threads: int | None = Field(default=2, ge=1)
    output: str = "outputs/train/cifar10_vgg"
    checkpoint_every: int = Field(default=200, ge=1)
    export: str = "cifar10-vgg.pt"

    def arch(self) -> VGGConfig:
        return VGGConfig(widths=tuple(self.widths), convs=tuple(self.convs), num_classes=len(CIFAR10_CLASSES),
                         dropout=self.dropout)


@dataclass
class Split:
    """Images (N, 3, 32, 32) uint8, labels (N,) int64 class indices, and their files."""

    images: Any
    labels: Any
    files: list[str]

    def subset(self, idx: np.ndarray) -> Split:
        t = torch.as_tensor(idx, dtype=torch.long)
        return Split(self.images[t], self.labels[t], [self.files[i] for i in idx])


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _torch_gen(*key: int) -> Any:
    return torch.Generator().manual_seed(int(_rng(*key).integers(2**62)))


def load_split(root: str | Path, split: str, max_images: int | None = None, seed: int = 0) -> Split:
    """Decode the images of the ``cifar10`` dataset's ``split`` (all, or a seeded pick of ``max_images``, in the
    dataset's order) into memory."""
    from vcm_plugin import read_image
    from vcm_plugin.datasets.cifar10 import Cifar10Dataset

    dataset = Cifar10Dataset(root, split)
    ids = dataset.image_ids
    if max_images is not None and max_images < len(ids):
        ids = [ids[i] for i in sorted(_rng(seed, 2).permutation(len(ids))[:max_images])]
    images = np.empty((len(ids), 32, 32, 3), np.uint8)
    for i, image_id in enumerate(ids):
        img = read_image(dataset.entries[image_id].path)
        if img.shape != (32, 32, 3):
            raise TrainingError(f"image {dataset.entries[image_id].path} is {img.shape[1]}x{img.shape[0]}, "
                                "expected 32x32")
        images[i] = img
    labels = torch.tensor([dataset.entries[i].class_index for i in ids], dtype=torch.long)
    return Split(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, list(ids))


def hold_out(data: Split, n_val: int, seed: int) -> tuple[Split, Split]:
    """(train, validation): a seeded random ``n_val`` images of ``data`` are held out."""
    if n_val >= len(data.files):
        raise TrainingError(f"val_images={n_val} leaves no training images out of {len(data.files)}")
    perm = _rng(seed, 3).permutation(len(data.files))
    return data.subset(np.sort(perm[n_val:])), data.subset(np.sort(perm[:n_val]))


def augment(x: Any, gen: Any, padding: int, hflip: bool) -> Any:
    """Random crops of the zero-padded (B, C, H, W) uint8 batch and random horizontal flips."""
    b, c, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding,) * 4)
        oy, ox = (torch.randint(0, 2 * padding + 1, (b, 1), generator=gen) for _ in range(2))
        rows, cols = oy + torch.arange(h), ox + torch.arange(w)
        x = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]
    if hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def normalise(x: Any, mean: Any, std: Any) -> Any:
    """uint8 (B, 3, H, W) -> float32 ``(x / 255 - mean) / std`` (as the task model does)."""
    return (x.float() / 255.0 - mean) / std


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based) of ``total``."""
    if schedule == "constant":
        return 1.0
    warm = round(warmup * total) if schedule == "onecycle" else 0
    if step < warm:
        return 1 / 25 + (1 - 1 / 25) * step / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def evaluate(net: Any, data: Split, mean: Any, std: Any, batch: int) -> tuple[float, float]:
    """(top-1 accuracy in [0, 1], mean cross-entropy in nats) of ``net`` in fp32 eval mode."""
    was_training = net.training
    net.eval()
    correct, loss = 0, 0.0
    with torch.inference_mode():
        for i in range(0, len(data.files), batch):
            logits = net(normalise(data.images[i:i + batch], mean, std))
            labels = data.labels[i:i + batch]
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
    net.train(was_training)
    n = len(data.files)
    return correct / n, loss / n


def _batch(cfg: ClassifierTrainConfig, data: Split, step: int, spe: int, perm: dict[int, Any]) -> tuple[Any, Any]:
    """The augmented uint8 images and labels of optimizer step ``step``: a function of (seed, step) only."""
    epoch, b = divmod(step, spe)
    if epoch not in perm:
        perm.clear()
        perm[epoch] = torch.randperm(len(data.files), generator=_torch_gen(cfg.seed, 0, epoch))
    idx = perm[epoch][b * cfg.batch_size:(b + 1) * cfg.batch_size]
    x = augment(data.images[idx], _torch_gen(cfg.seed, 1, step), cfg.augment.crop_padding, cfg.augment.hflip)
    return x, data.labels[idx]


class ClassifierTrainer(Trainer):
    """``vcm train classifier``: cross-entropy with label smoothing, validated (and ``best.pt`` chosen) by top-1
    on the held-out images every epoch; the export scored once on the test split."""

    Config = ClassifierTrainConfig

    def __init__(self, cfg: ClassifierTrainConfig, command: str = "") -> None:
        self.t0, self.load_start = time.perf_counter(), os.getloadavg()
        super().__init__(cfg, RESUMABLE_CHANGES)
        self.command, self.desc = command, cfg.name
        self.train_set, self.val_set = hold_out(load_split(cfg.data, cfg.train_split, cfg.max_images, cfg.seed),
                                                cfg.val_images, cfg.seed)
        pixels = self.train_set.images.double() / 255.0
        self.mean_l, self.std_l = pixels.mean((0, 2, 3)).tolist(), pixels.std((0, 2, 3)).tolist()
        self.mean, self.std = torch.tensor(self.mean_l).view(1, 3, 1, 1), torch.tensor(self.std_l).view(1, 3, 1, 1)
        del pixels
        self.spe = len(self.train_set.files) // cfg.batch_size  # steps per epoch (the last partial batch dropped)
        if self.spe < 1:
            raise TrainingError(f"{len(self.train_set.files)} training images are fewer than "
                                f"batch_size={cfg.batch_size}")
        self.max_iter = cfg.steps or cfg.epochs * self.spe
        self.checkpoint_every, self.val_every = (cfg.checkpoint_every, self.spe), (self.spe,)
        self.model = build_cifar_vgg(cfg.arch()).train()
        if cfg.optimizer == "sgd":
            opt: Any = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                       nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.optimizers = {"optimizer": opt}
        self.perm: dict[int, Any] = {}  # epoch -> its batch order
        self.seen, self.hits, self.ema = 0, 0, float("nan")  # this epoch's training top-1, the loss's moving mean

    def lr_at(self, step: int) -> float:
        """The peak ``lr`` times :func:`lr_factor`: a pure function of (step, total), so ``steps`` may grow."""
        return self.config.lr * lr_factor(step, self.max_iter, self.config.schedule, self.config.warmup)

    def run_step(self) -> dict[str, float]:
        cfg, opt = self.config, self.optimizers["optimizer"]
        x, y = _batch(cfg, self.train_set, self.step, self.spe, self.perm)
        if self.step % self.spe == 0:
            self.seen = self.hits = 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            logits = self.model(normalise(x, self.mean, self.std))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        value = float(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        opt.step()
        self.seen, self.hits = self.seen + len(y), self.hits + int((logits.argmax(1) == y).sum())
        self.ema = value if math.isnan(self.ema) else 0.98 * self.ema + 0.02 * value
        return {"loss": value, "top1": self.hits / self.seen}

    def validate(self) -> dict[str, float]:
        acc, vloss = evaluate(self.model, self.val_set, self.mean, self.std, self.config.eval_batch_size)
        return {"epoch": self.step / self.spe, "train_top1": self.hits / max(1, self.seen), "train_loss": self.ema,
                "val_top1": acc, "val_loss": vloss, "lr": self.optimizers["optimizer"].param_groups[0]["lr"]}

    def better(self, metrics: dict[str, Any], best: dict[str, Any]) -> bool:
        return (metrics["val_top1"], -metrics["val_loss"]) > (best["val_top1"], -best["val_loss"])

    def best_state(self) -> dict[str, Any]:
        return {"format": EXPORT_FORMAT,
                "state_dict": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "arch": self.config.arch().to_dict(), "mean": self.mean_l, "std": self.std_l,
                "classes": list(CIFAR10_CLASSES)}

    def finish(self) -> dict[str, Any]:
        """Score ``best.pt`` on the test split; write the export and ``zoo_card.yaml``; the result record."""
        import yaml

        from vcm_plugin.hashing import file_sha256
        from vcm_plugin.tasks.cifar_vgg import load_cifar_vgg

        cfg, out, spe, total, train_wall = self.config, self.output, self.spe, self.max_iter, self.wall_s
        n_train, n_val = len(self.train_set.files), len(self.val_set.files)
        best = load_checkpoint(out / BEST)
        export = {k: best[k] for k in ("format", "state_dict", "arch", "mean", "std", "classes")}
        export_path = atomic_save(export, out / cfg.export)
        net, mean_l, std_l = load_cifar_vgg(export_path)  # scored exactly as the task model will load it
        t_test = time.perf_counter()
        test = load_split(cfg.data, cfg.test_split, cfg.max_test_images, cfg.seed)
        mean, std = torch.tensor(mean_l).view(1, 3, 1, 1), torch.tensor(std_l).view(1, 3, 1, 1)
        test_acc, test_loss = evaluate(net, test, mean, std, cfg.eval_batch_size)
        sha = file_sha256(export_path)
        result = {
            "name": cfg.name, "test_split": cfg.test_split, "test_images": len(test.files), "test_top1": test_acc,
            "test_loss": test_loss, "val_images": n_val, "val_top1": float(best["val"]["val_top1"]),
            "val_loss": float(best["val"]["val_loss"]), "best_step": int(best["step"]), "train_images": n_train,
            "steps": total, "steps_per_epoch": spe, "epochs": total / spe, "resumed_from": self.resumed_from,
            "wall_s": {"train": round(train_wall, 1), "test_eval": round(time.perf_counter() - t_test, 1),
                       "this_command": round(time.perf_counter() - self.t0, 1)},
            "threads": torch.get_num_threads(),
            "loadavg": {"start": list(self.load_start), "end": list(os.getloadavg())},
            "seed": cfg.seed, "torch": torch.__version__, "command": self.command,
            "export": {"file": cfg.export, "sha256": sha, "bytes": export_path.stat().st_size},
            "history": self.history, "config": cfg.model_dump(mode="json"),
        }
        card = {"name": cfg.name, "kind": "classifier", "architecture": "cifar10-vgg", "arch_params": export["arch"],
                "file": cfg.export, "sha256": sha, "trained_here": True,
                "training": {"command": self.command, "data": f"{cfg.train_split} split of CIFAR-10 ({n_train} "
                             f"images; {n_val} held out for validation); test split only for the final score",
                             "steps": total, "epochs": round(total / spe, 2), "wall_s": round(train_wall, 1),
                             "threads": result["threads"], "seed": cfg.seed},
                "results": {"cifar10_test_top1": round(test_acc, 4), "val_top1": round(result["val_top1"], 4)}}
        (out / "zoo_card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        return result
