"""``vcm train direct|feature CONFIG``: task codecs trained by distillation through a frozen task mid-model.

Loss (../shared/PAPER_NOTES.md, paper Fig. 4)::

    L = R + lmbda * d(M(Ŷ1), M(Y1))

* R: bits per INPUT pixel from the entropy model's likelihoods (``-log2 p`` summed over
  every latent, divided by batch x crop pixels), the same quantity real bitstreams measure;
* Y1 = ``front(X)`` at the cut point of the frozen task model; Ŷ1 the codec's output
  (``direct``: from the image X; ``feature``: from Y1 itself, model splitting);
* M the frozen layers from the cut to the distillation point Y2 (``distill``; Y2 = Y1 is
  plain feature distillation; ``output`` is the model's output);
* d: ``mse``: mean squared error at Y2 divided by the variance of the teacher's Y2 (the
  same for every tensor of a multi-tensor point, averaged), so lambda means the same at
  any depth; ``kl`` (classifiers, at ``output``): KL(teacher posterior || codec's) in
  nats; ``ce``: cross-entropy against the teacher's own top-1 class. No labels needed.

Training practice is that of ``vcm train codec`` (and reuses its data and optimiser code):
random crops + flips of any image folders (evaluation images excluded), AdamW plus an
Adam on the entropy bottleneck's quantiles, warm-up + cosine learning rate, gradient
clipping, seeded RNGs, ``last.pt`` every ``checkpoint_every`` steps (atomic; rerunning
the command resumes after kill -9), ``best.pt`` by validation loss, a stop with a clear
message and the last good checkpoint kept on a non-finite loss. Validation codes the
held-out images with REAL bitstreams at the task model's own input geometry.

The export ``model.pt`` (weights only, see :mod:`vcm_plugin.learned.task_checkpoint`) is
bound to the task model's weights and the cut point, and ``codec.yaml`` next to it is the
codec entry for a ``vcm run`` config (codec ``direct`` or ``feature-learned``).
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from vcm_plugin.learned.models import KEEP_FLOAT32, with_default_bounds
from vcm_plugin.learned.task_checkpoint import FORMAT
from vcm_plugin.splitting.adapter import OUTPUT
from vcm_plugin.training.checkpoints import (
    ResumableRun,
    TrainingError,
    atomic_save,
    seed_everything,
)
from vcm_plugin.training.codec import (
    EXPORT,
    RDTrainingConfig,
    _centre_crop,
    _Strict,
    load_images,
    lr_at,
    make_optimizers,
    random_batch,
    resolve_images,
)

CODEC_NAMES = {"direct": "direct", "feature": "feature-learned"}


class TaskArchConfig(_Strict):
    """Sizes of the codec network (see :class:`~vcm_plugin.learned.task_nets.TaskNetConfig`)."""

    N: int = Field(64, ge=1)
    M: int = Field(96, ge=1)
    down: int | None = Field(None, ge=0, description="stride-2 analysis steps; default: 4 direct, 1 feature")
    entropy: Literal["hyperprior", "factorized"] = "hyperprior"
    res_blocks: int = Field(2, ge=0, description="residual blocks in the decoder")
    decoder: Literal["plain", "front"] = Field(
        "plain", description="direct coding: 'front' ends the latent decoder with a trainable copy of the task "
                             "model's front layers (after an image-style synthesis)")


class TaskCodecTrainConfig(RDTrainingConfig):
    """Schema of ``eval_configs/train/*.yaml`` for ``vcm train direct`` / ``vcm train feature``."""

    kind: Literal["direct", "feature"] | None = None
    output: str
    task_model: str
    task_params: dict[str, Any] = Field(default_factory=dict)
    cut: str
    distill: str | None = Field(None, description="distillation point Y2 (default: the cut); 'output' allowed")
    distortion: Literal["mse", "kl", "ce"] = "mse"
    lmbda: float = Field(..., gt=0)
    arch: TaskArchConfig = Field(default_factory=TaskArchConfig)
    stats_batches: int = Field(4, ge=1, description="batches used for the feature mean / std")
    init_from: str | None = Field(None, description="start from this task codec export (e.g. another lambda)")
    init_image_codec: str | None = Field(
        None, description="direct coding: start g_a, h_a, h_s (and g_s with decoder: front) and the entropy models "
                          "from this CompressAI bmshj2018-hyperprior of the same N, M (zoo name or file)")


def _fingerprint(config: TaskCodecTrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(config.model_dump(
        exclude={"kind", "steps", "output", "checkpoint_every", "val_every", "threads"}, mode="json")))


def build_adapter(config: TaskCodecTrainConfig) -> Any:
    """The task model (weights from ``task_params``) cut at ``config.cut``; checks the distillation point."""
    from vcm_plugin.splitting.adapter import split_adapter
    from vcm_plugin.tasks.registry import get_task_model

    adapter = split_adapter(get_task_model(config.task_model, **config.task_params), config.cut)
    distill = config.distill or config.cut
    adapter.check_distillation_point(distill)
    if config.distortion in ("kl", "ce") and (distill != OUTPUT or adapter.task != "classification"):
        raise TrainingError(f"distortion {config.distortion!r} compares class posteriors: it needs a classifier "
                            f"and distill: output (got {adapter.task} model, distill {distill!r})")
    return adapter


def net_config(config: TaskCodecTrainConfig, kind: str, adapter: Any, crop: int) -> Any:
    """The :class:`TaskNetConfig` for this cut: Y1's channels and stride measured on a blank crop."""
    from vcm_plugin.learned.task_nets import TaskNetConfig

    channels, stride = adapter.probe(crop, crop)
    if stride & (stride - 1):
        raise TrainingError(f"cut {config.cut!r} has stride {stride}, not a power of two")
    shift = int(math.log2(stride))
    if kind == "direct":
        down = config.arch.down if config.arch.down is not None else max(4, shift)
        if down < shift:
            raise TrainingError(f"arch.down={down} is below the cut's stride 2^{shift}")
        return TaskNetConfig("direct", 3, channels, down, down - shift, config.arch.N, config.arch.M,
                             config.arch.entropy, config.arch.res_blocks, config.arch.decoder)
    if config.arch.decoder != "plain":
        raise TrainingError("arch.decoder: 'front' is for direct coding; feature codecs use 'plain'")
    down = config.arch.down if config.arch.down is not None else 1
    return TaskNetConfig("feature", channels, channels, down, down, config.arch.N, config.arch.M, config.arch.entropy,
                         config.arch.res_blocks)


def init_from_image_codec(net: Any, source: str) -> list[str]:
    """Copy the matching tensors of a CompressAI image codec (zoo name or file) into ``net``; returns their keys."""
    from vcm_plugin.weights import load_state_dict_safely
    from vcm_plugin.zoo import zoo_entries, zoo_file

    entry = zoo_entries().get(source)
    path = zoo_file(entry) if entry is not None else Path(source)
    from compressai.zoo.pretrained import load_pretrained

    theirs = load_pretrained(dict(load_state_dict_safely(path)))  # renames keys of older CompressAI checkpoints
    ours = net.state_dict()
    prefixes = ("g_a.", "h_a.", "h_s.", "entropy_bottleneck.", "gaussian_conditional.")
    if net.config.decoder == "front":
        prefixes += ("g_s.",)
    cdf = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table", ".bound")  # tables, fixed constants
    wanted = [k for k in ours if k.startswith(prefixes) and not k.endswith(cdf)]
    bad = [k for k in wanted if k not in theirs or tuple(theirs[k].shape) != tuple(ours[k].shape)]
    if bad:
        raise TrainingError(f"init_image_codec {source!r} ({path}) does not fit this codec's N={net.config.N}, "
                            f"M={net.config.M}: missing or other shape for {bad[:5]}")
    ours.update({k: theirs[k].float() for k in wanted})
    net.load_state_dict(ours)
    return wanted


def distortion(adapter: Any, point: str, kind: str, y1_hat: Any, y1: Any, teacher: list[Any] | None = None) -> Any:
    """d(M(Ŷ1), M(Y1)) (see the module docstring); ``teacher`` = M(Y1) when already computed."""
    import torch
    import torch.nn.functional as F

    student = adapter.mid(y1_hat, point)
    if teacher is None:
        with torch.no_grad():
            teacher = adapter.mid(y1, point)
    if kind == "mse":
        terms = [F.mse_loss(s, t) / t.var().clamp_min(1e-8) for s, t in zip(student, teacher)]
        return torch.stack(terms).mean()
    logits, target = student[0].flatten(1), teacher[0].flatten(1)
    if kind == "kl":
        return F.kl_div(F.log_softmax(logits, 1), F.log_softmax(target, 1), log_target=True, reduction="batchmean")
    return F.cross_entropy(logits, target.argmax(1))


def rate_bpp(likelihoods: dict[str, Any], pixels: int) -> Any:
    """Bits per input pixel of the likelihoods (``pixels`` = batch x height x width of the INPUT)."""
    import torch

    return sum(-torch.log2(lik).sum() for lik in likelihoods.values()) / pixels


def validate(net: Any, adapter: Any, images: list[np.ndarray], config: TaskCodecTrainConfig,
             kind: str) -> dict[str, float]:
    """Real bitstreams of held-out images at the model's input geometry: bpp over ORIGINAL pixels, d, loss."""
    import torch

    point = config.distill or config.cut
    net.eval()
    net.update(force=True)
    bits = pixels = 0
    dists, agree = [], []
    with torch.no_grad():
        for image in images:
            x = adapter.input_tensor(image)
            y1 = adapter.front(x)
            size = tuple(y1.shape[-2:])
            out = net.compress(x if kind == "direct" else y1)
            y1_hat = net.decompress(out["strings"], out["shape"], size)
            bits += 8 * sum(len(s[0]) for s in out["strings"])
            pixels += image.shape[0] * image.shape[1]
            dists.append(float(distortion(adapter, point, config.distortion, y1_hat, y1)))
            if adapter.task == "classification":
                agree.append(float(adapter.mid(y1_hat, OUTPUT)[0].argmax(1).eq(
                    adapter.mid(y1, OUTPUT)[0].argmax(1)).float().mean()))
    net.train()
    bpp, dist = bits / pixels, float(np.mean(dists))
    result = {"bpp": bpp, "distortion": dist, "loss": bpp + config.lmbda * dist}
    if agree:
        result["top1_agreement"] = float(np.mean(agree))
    return result


def export(net: Any, config: TaskCodecTrainConfig, kind: str, adapter: Any, path: Path,
           extra: dict[str, Any]) -> Path:
    """Weights-only export bound to the task model and cut, plus ``codec.yaml`` for ``vcm run``."""
    import copy

    import torch
    import yaml

    net = copy.deepcopy(net).eval()
    if config.export_dtype == "float16":
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(p.half().float())
    net.update(force=True)
    state = net.state_dict()
    if config.export_dtype == "float16":
        state = {k: (v.half() if v.is_floating_point() and not k.endswith((*KEEP_FLOAT32, "_mean", "_std"))
                     else v) for k, v in state.items()}
    atomic_save({"format": FORMAT, "paradigm": kind, "net": net.config.to_dict(), "binding": adapter.identity(),
                 "task_params": json.loads(json.dumps(config.task_params)), "distill": config.distill or config.cut,
                 "distortion": config.distortion, "lmbda": config.lmbda, "state_dict": state, **extra}, path)
    entry = {"name": CODEC_NAMES[kind], "task_model": config.task_model, "task_params": config.task_params,
             "cut": config.cut, "checkpoint": str(path)}
    (path.parent / "codec.yaml").write_text(
        "# the codec entry of this export for a `vcm run` config (qualities: one checkpoint per lambda,\n"
        "# e.g. checkpoint: outputs/train/my-codec-q{quality}/model.pt)\n" + yaml.safe_dump(entry, sort_keys=False))
    return path


def train(config: TaskCodecTrainConfig, kind: str, output: Path, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) a direct / feature codec and export it; returns the ``result.json`` record."""
    import torch
    from tqdm import tqdm

    from vcm_plugin.learned.task_checkpoint import load_task_codec
    from vcm_plugin.learned.task_nets import build_task_net

    if config.threads:
        torch.set_num_threads(config.threads)
    output.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    adapter = build_adapter(config)
    point = config.distill or config.cut
    train_files, val_files = resolve_images(config.data, config.seed)
    train_images = load_images(train_files, config.data.crop, config.data.small_images)
    val_images = [_centre_crop(im, config.data.max_val_pixels) for im in load_images(val_files, 16)]
    crop = config.data.crop
    arch = net_config(config, kind, adapter, crop)
    net = build_task_net(arch, adapter.front_module() if arch.decoder == "front" else None)
    rng = np.random.default_rng(config.seed)
    if config.init_from:
        init, _ = load_task_codec(config.init_from, adapter.identity(), adapter)
        if init.config != net.config:
            raise TrainingError(f"init_from {config.init_from!r} has architecture {init.config}, this config "
                                f"{net.config}")
        net.load_state_dict(with_default_bounds(init.state_dict(), net))
    else:
        if config.init_image_codec:
            init_from_image_codec(net, config.init_image_codec)
        # feature statistics from a few batches (their own RNG: the training stream is unchanged)
        stats_rng = np.random.default_rng(config.seed + 1)
        xs = [random_batch(train_images, crop, config.data.batch_size, stats_rng) for _ in range(config.stats_batches)]
        y1s = torch.cat([adapter.front(x) for x in xs])
        net.set_statistics(y1s, y1s)
    net.train()
    optimizer, aux_optimizer = make_optimizers(net, config)  # type: ignore[arg-type]
    run = ResumableRun(output, _fingerprint(config), net, optimizer, aux_optimizer, rng, tags={"kind": kind},
                       quiet=quiet)

    bar = tqdm(total=config.steps, initial=run.step, disable=quiet, desc=f"train {kind} codec", unit="step")
    while run.step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(run.step, config)  # type: ignore[arg-type]
        x = random_batch(train_images, crop, config.data.batch_size, rng)
        y1 = adapter.front(x)
        out = net(x if kind == "direct" else y1, tuple(y1.shape[-2:]))
        bpp = rate_bpp(out["likelihoods"], x.shape[0] * x.shape[2] * x.shape[3])
        dist = distortion(adapter, point, config.distortion, out["y1_hat"], y1)
        loss = bpp + config.lmbda * dist
        aux_loss = net.aux_loss()
        if not (torch.isfinite(loss) and torch.isfinite(aux_loss)):
            bar.close()
            raise run.non_finite(loss.item(), aux_loss.item())
        run.step_optimizers(loss, aux_loss, config.clip_grad)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", bpp=f"{bpp.item():.3f}", d=f"{dist.item():.4f}", refresh=False)
        if run.step % config.val_every == 0 or run.step == config.steps:
            metrics = validate(net, adapter, val_images, config, kind)
            run.record_validation(metrics)
            if not quiet:
                tqdm.write(f"step {run.step}: val bpp {metrics['bpp']:.4f} d {metrics['distortion']:.4f} "
                           f"loss {metrics['loss']:.4f} (best {run.best:.4f})")
        if run.step % config.checkpoint_every == 0 or run.step == config.steps:
            run.save()
    bar.close()
    best_step = run.restore_best()
    wall = run.wall_s
    export(net, config, kind, adapter, output / EXPORT, {"best_step": best_step})
    final = validate(net, adapter, val_images, config, kind)
    result = {"export": str(output / EXPORT), "codec": CODEC_NAMES[kind], "best_step": best_step, "steps": run.step,
              "wall_s": round(wall, 1), "val": final, "history": run.history, "train_images": len(train_files),
              "val_images": [str(p) for p in val_files], "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
              "kind": kind, "config": config.model_dump(mode="json")}
    (output / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _train_kind(kind: str, config_path: str, overrides: list[str], output: str | None, quiet: bool) -> int:
    from vcm_plugin.config import load_model_config

    config = load_model_config(config_path, TaskCodecTrainConfig, overrides)
    if config.kind is not None and config.kind != kind:
        raise TrainingError(f"{config_path}: kind {config.kind!r} in the config, but `vcm train {kind}` was run")
    result = train(config, kind, Path(output or config.output), quiet=quiet)
    if not quiet:
        val = result["val"]
        print(f"exported {result['export']} (codec {result['codec']!r}, best step {result['best_step']}): "
              f"validation bpp {val['bpp']:.4f}, distortion {val['distortion']:.4f}, {result['wall_s']:.0f} s")
    return 0


def train_direct(config_path: str, overrides: list[str], output: str | None = None, quiet: bool = False) -> int:
    """Entry point of ``vcm train direct CONFIG [key=value ...]``."""
    return _train_kind("direct", config_path, overrides, output, quiet)


def train_feature(config_path: str, overrides: list[str], output: str | None = None, quiet: bool = False) -> int:
    """Entry point of ``vcm train feature CONFIG [key=value ...]``."""
    return _train_kind("feature", config_path, overrides, output, quiet)
