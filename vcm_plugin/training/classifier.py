"""``vcm train classifier CONFIG [key=value ...]``: train the project's CIFAR-10 VGG-style classifier.

Data: the class-folder CIFAR-10 PNGs of ``data`` (``train_labels.csv`` / ``test_labels.csv``
with ``file,class_index,class_name``), decoded once into a uint8 tensor. A seeded
``val_images`` hold-out of the TRAIN split selects the best model; the test split is
used only once, at the end, to score that best model. Training: SGD with Nesterov
momentum (or AdamW), one-cycle / cosine LR, label smoothing, gradient-norm clipping,
random 32x32 crops of the 4-pixel zero-padded image and horizontal flips, bf16 autocast
on CPU (``amp: fp32`` turns it off). Batch order and augmentation are pure functions of
(seed, step), and ``last.pt`` holds model, optimizer, scheduler and RNG states, so the
same command rerun after a kill -9 resumes where the last checkpoint stopped, bit for bit
(same ``threads``). A larger ``steps``/``epochs`` on rerun extends a finished run; the LR
schedule is then stretched to the new length from the resume point on.
Outputs in ``output``: ``last.pt``, ``best.pt`` (best validation top-1), the exported
weights-only checkpoint ``export`` (state_dict, architecture, mean/std, class names),
``result.json`` and ``zoo_card.yaml`` (a draft project-zoo card).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vcm_plugin.config import load_model_config
from vcm_plugin.tasks.cifar_vgg import CIFAR10_CLASSES, EXPORT_FORMAT, VGGConfig, build_cifar_vgg
from vcm_plugin.training.checkpoints import (
    BEST,
    LAST,
    TrainingError,
    atomic_save,
    load_checkpoint,
    rng_state,
    seed_everything,
    set_rng_state,
)

RESULT = "result.json"
#: Keys that may change between a run and its resumption (they do not change what is learned so far).
RESUMABLE_CHANGES = {"kind", "epochs", "steps", "threads", "output", "checkpoint_every", "export", "max_test_images",
                     "eval_batch_size"}


def _default_data() -> str:
    return f"{os.environ.get('VCM_SHARED', '../shared')}/data/cifar10"


class AugmentConfig(BaseModel):
    """``crop_padding`` pixels of zero padding before a random 32x32 crop (0: none); ``hflip`` random flips."""

    model_config = ConfigDict(extra="forbid")
    crop_padding: int = Field(default=4, ge=0)
    hflip: bool = True


class ClassifierTrainConfig(BaseModel):
    """The ``vcm train classifier`` config (unknown keys are errors). ``lr`` is the peak learning rate;
    ``warmup`` the fraction of steps of the one-cycle warm-up; ``steps`` (optimizer steps) overrides
    ``epochs``; ``threads`` torch CPU threads; ``checkpoint_every`` steps between ``last.pt`` saves."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["classifier"] | None = Field(None, description="lets `vcm train CONFIG` find the trainer")
    name: str = "cifar10-vgg"
    data: str = Field(default_factory=_default_data)
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
        import torch

        t = torch.as_tensor(idx, dtype=torch.long)
        return Split(self.images[t], self.labels[t], [self.files[i] for i in idx])


# -- data ------------------------------------------------------------------------------------
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _torch_gen(*key: int) -> Any:
    import torch

    return torch.Generator().manual_seed(int(_rng(*key).integers(2**62)))


def load_split(root: str | Path, split: str, max_images: int | None = None, seed: int = 0) -> Split:
    """Decode ``<root>/<split>_labels.csv``'s images (all, or a seeded pick of ``max_images``) into memory."""
    import csv

    import torch

    from vcm_plugin import read_image
    from vcm_plugin.errors import VcmError

    csv_path = Path(root) / f"{split}_labels.csv"
    try:
        with open(csv_path, newline="") as fh:
            rows = [(r["file"], int(r["class_index"])) for r in csv.DictReader(fh)]
    except (OSError, KeyError, ValueError) as exc:
        raise TrainingError(f"cannot read the labels {csv_path} (file,class_index,class_name): {exc}") from exc
    if max_images is not None and max_images < len(rows):
        rows = [rows[i] for i in sorted(_rng(seed, 2).permutation(len(rows))[:max_images])]
    images = np.empty((len(rows), 32, 32, 3), np.uint8)
    for i, (file, _) in enumerate(rows):
        try:
            img = read_image(Path(root) / file)
        except VcmError as exc:
            raise TrainingError(str(exc)) from exc
        if img.shape != (32, 32, 3):
            raise TrainingError(f"image {Path(root) / file} is {img.shape[1]}x{img.shape[0]}, expected 32x32")
        images[i] = img
    labels = torch.tensor([c for _, c in rows], dtype=torch.long)
    if len(rows) == 0 or labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES):
        raise TrainingError(f"{csv_path}: no images, or class indices outside 0..{len(CIFAR10_CLASSES) - 1}")
    return Split(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, [f for f, _ in rows])


def hold_out(data: Split, n_val: int, seed: int) -> tuple[Split, Split]:
    """(train, validation): a seeded random ``n_val`` images of ``data`` are held out."""
    if n_val >= len(data.files):
        raise TrainingError(f"val_images={n_val} leaves no training images out of {len(data.files)}")
    perm = _rng(seed, 3).permutation(len(data.files))
    return data.subset(np.sort(perm[n_val:])), data.subset(np.sort(perm[:n_val]))


def augment(x: Any, gen: Any, padding: int, hflip: bool) -> Any:
    """Random crops of the zero-padded (B, C, H, W) uint8 batch and random horizontal flips."""
    import torch
    import torch.nn.functional as F

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
    import torch
    import torch.nn.functional as F

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


# -- training --------------------------------------------------------------------------------
def _model_export(net: Any, cfg: ClassifierTrainConfig, mean: list[float], std: list[float]) -> dict[str, Any]:
    return {"format": EXPORT_FORMAT, "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
            "arch": cfg.arch().to_dict(), "mean": mean, "std": std, "classes": list(CIFAR10_CLASSES)}


def _check_finite(net: Any, step: int) -> None:
    bad = [k for k, v in net.state_dict().items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise TrainingError(f"non-finite weights after step {step} ({', '.join(bad[:5])}); the checkpoint was not "
                            "written, the last good one is kept")


def _resume_state(out: Path, cfg: ClassifierTrainConfig) -> dict[str, Any] | None:
    if not (out / LAST).is_file():
        return None
    state = load_checkpoint(out / LAST)
    old, new = state.get("config", {}), cfg.model_dump(mode="json")
    changed = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        raise TrainingError(f"{out / LAST} was trained with a different config ({', '.join(changed)} changed); "
                            "use another output folder, or delete it to start again")
    return state


def _optimizer(cfg: ClassifierTrainConfig, net: Any, total: int) -> tuple[Any, Any]:
    """(optimizer, LambdaLR scheduler); the lr is a pure function of (step, total), so ``steps`` may grow."""
    import torch

    if cfg.optimizer == "sgd":
        opt: Any = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                                   weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        return lr_factor(step, total, cfg.schedule, cfg.warmup)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _batch(cfg: ClassifierTrainConfig, data: Split, step: int, spe: int, perm: dict[int, Any]) -> tuple[Any, Any]:
    """The augmented uint8 images and labels of optimizer step ``step``: a function of (seed, step) only."""
    import torch

    epoch, b = divmod(step, spe)
    if epoch not in perm:
        perm.clear()
        perm[epoch] = torch.randperm(len(data.files), generator=_torch_gen(cfg.seed, 0, epoch))
    idx = perm[epoch][b * cfg.batch_size:(b + 1) * cfg.batch_size]
    x = augment(data.images[idx], _torch_gen(cfg.seed, 1, step), cfg.augment.crop_padding, cfg.augment.hflip)
    return x, data.labels[idx]


def train(cfg: ClassifierTrainConfig, quiet: bool = False, command: str = "") -> dict[str, Any]:
    """Train (or resume) as ``cfg`` says; returns the result written to ``result.json``."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    t0, load_start = time.perf_counter(), os.getloadavg()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    state = _resume_state(out, cfg)
    train_set, val_set = hold_out(load_split(cfg.data, cfg.train_split, cfg.max_images, cfg.seed),
                                  cfg.val_images, cfg.seed)
    pixels = train_set.images.double() / 255.0
    mean_l, std_l = pixels.mean((0, 2, 3)).tolist(), pixels.std((0, 2, 3)).tolist()
    mean, std = torch.tensor(mean_l).view(1, 3, 1, 1), torch.tensor(std_l).view(1, 3, 1, 1)
    del pixels
    spe = len(train_set.files) // cfg.batch_size  # steps per epoch (the last partial batch is dropped)
    if spe < 1:
        raise TrainingError(f"{len(train_set.files)} training images are fewer than batch_size={cfg.batch_size}")
    total = cfg.steps or cfg.epochs * spe

    seed_everything(cfg.seed)
    net = build_cifar_vgg(cfg.arch()).train()
    opt, sched = _optimizer(cfg, net, total)
    start, wall_before, best, history, resumed = 0, 0.0, None, [], []
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start, wall_before = int(state["step"]), float(state["train_wall_s"])
        best, history, resumed = state["best"], state["history"], state["resumed_from"] + [start]
        if not quiet:
            print(f"resuming {out / LAST} at step {start} of {total}", file=sys.stderr)
    t_train = time.perf_counter()

    def save_last(step: int) -> None:
        _check_finite(net, step)
        atomic_save({"step": step, "model": net.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "rng": rng_state(), "best": best, "history": history,
                     "resumed_from": resumed, "config": cfg.model_dump(mode="json"),
                     "train_wall_s": wall_before + time.perf_counter() - t_train}, out / LAST)

    bar = tqdm(total=total, initial=start, disable=quiet, desc=cfg.name, unit="step", dynamic_ncols=True)
    perm: dict[int, Any] = {}
    seen = hits = 0
    ema = float("nan")
    for step in range(start, total):
        x, y = _batch(cfg, train_set, step, spe, perm)
        if step % spe == 0 or step == start:
            seen = hits = 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            logits = net(normalise(x, mean, std))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        value = float(loss.detach())
        if not math.isfinite(value):
            bar.close()
            kept = f"the last good checkpoint {out / LAST} is kept" if (out / LAST).is_file() else "no checkpoint yet"
            raise TrainingError(f"loss is {value} at step {step + 1} (lr {opt.param_groups[0]['lr']:.3g}); training "
                                f"stopped, {kept}. Lower lr or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        seen, hits = seen + len(y), hits + int((logits.argmax(1) == y).sum())
        ema = value if math.isnan(ema) else 0.98 * ema + 0.02 * value
        bar.update(1)
        done = step + 1
        bar.set_postfix(loss=f"{ema:.3f}", acc=f"{hits / seen:.3f}", epoch=f"{done / spe:.2f}", refresh=False)
        if done % spe == 0 or done == total:
            acc, vloss = evaluate(net, val_set, mean, std, cfg.eval_batch_size)
            history.append({"step": done, "epoch": done / spe, "train_top1": hits / seen, "train_loss": ema,
                            "val_top1": acc, "val_loss": vloss, "lr": opt.param_groups[0]["lr"]})
            if best is None or (acc, -vloss) > (best["val_top1"], -best["val_loss"]):
                best = {"step": done, "val_top1": acc, "val_loss": vloss}
                _check_finite(net, done)
                atomic_save({"step": done, **_model_export(net, cfg, mean_l, std_l), **best}, out / BEST)
            if not quiet:
                bar.write(f"epoch {done / spe:.2f} step {done}: train loss {ema:.3f} top1 {hits / seen:.3f}, "
                          f"val loss {vloss:.3f} top1 {acc:.4f} (best {best['val_top1']:.4f} at step {best['step']})")
        if done % cfg.checkpoint_every == 0 or done % spe == 0 or done == total:
            save_last(done)
    bar.close()
    train_wall = wall_before + (time.perf_counter() - t_train if total > start else 0.0)
    return _finish(cfg, out, total, spe, len(train_set.files), len(val_set.files), history, resumed, train_wall, t0,
                   load_start, command)


def _finish(cfg: ClassifierTrainConfig, out: Path, total: int, spe: int, n_train: int, n_val: int,
            history: list[dict[str, Any]], resumed: list[int], train_wall: float, t0: float,
            load_start: tuple[float, float, float], command: str) -> dict[str, Any]:
    """Score ``best.pt`` on the test split; write the export, ``result.json`` and ``zoo_card.yaml``."""
    import torch
    import yaml

    from vcm_plugin.tasks.cifar_vgg import load_cifar_vgg
    from vcm_plugin.weights import file_sha256

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
        "test_loss": test_loss, "val_images": n_val, "val_top1": float(best["val_top1"]),
        "val_loss": float(best["val_loss"]), "best_step": int(best["step"]), "train_images": n_train,
        "steps": total, "steps_per_epoch": spe, "epochs": total / spe, "resumed_from": resumed,
        "wall_s": {"train": round(train_wall, 1), "test_eval": round(time.perf_counter() - t_test, 1),
                   "this_command": round(time.perf_counter() - t0, 1)},
        "threads": torch.get_num_threads(), "loadavg": {"start": list(load_start), "end": list(os.getloadavg())},
        "seed": cfg.seed, "torch": torch.__version__, "command": command,
        "export": {"file": cfg.export, "sha256": sha, "bytes": export_path.stat().st_size},
        "history": history, "config": cfg.model_dump(mode="json"),
    }
    tmp = out / f".{RESULT}.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out / RESULT)
    card = {"name": cfg.name, "kind": "classifier", "architecture": "cifar10-vgg", "arch_params": export["arch"],
            "file": cfg.export, "sha256": sha, "trained_here": True,
            "training": {"command": command, "data": f"{cfg.train_split} split of CIFAR-10 ({n_train} images; "
                         f"{n_val} held out for validation); test split only for the final score",
                         "steps": total, "epochs": round(total / spe, 2), "wall_s": round(train_wall, 1),
                         "threads": result["threads"], "seed": cfg.seed},
            "results": {"cifar10_test_top1": round(test_acc, 4), "val_top1": round(result["val_top1"], 4)}}
    (out / "zoo_card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return result


def train_from_config(config_path: str, overrides: list[str], output: str | None = None, quiet: bool = False) -> int:
    """``vcm train classifier``: load the config (``output`` overrides its folder), train, report; exit status."""
    cfg = load_model_config(config_path, ClassifierTrainConfig, overrides)
    if output is not None:
        cfg = cfg.model_copy(update={"output": output})
    command = shlex.join(["vcm", "train", "classifier", str(config_path), *overrides,
                          *(["-o", output] if output is not None else [])])
    result = train(cfg, quiet=quiet, command=command)
    print(f"{cfg.name}: test top-1 {result['test_top1']:.4f} on {result['test_images']} {cfg.test_split} images, "
          f"val top-1 {result['val_top1']:.4f}, {result['steps']} steps in {result['wall_s']['train']:.0f} s; "
          f"exported {Path(cfg.output) / cfg.export}")
    return 0
