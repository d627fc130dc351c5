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

Training is :class:`~vcm_plugin.training.codec.RDTrainer`'s (data, optimisers, schedule, ``device``).
On a CUDA device the teacher's front X -> Y1 is a frozen copy of the front layers on that device
(the same operations as ``SplitAdapter.front``) and the task model's layers move there for the
mid-model. ``arch.encoder: front`` (direct coding) starts as the split codec: a trainable copy of
the front layers, then the feature codec's analysis; ``front_frozen_steps`` keeps the copy frozen
for the first steps (so far, training is exactly the feature codec's). The
export ``model.pt`` (:mod:`vcm_plugin.learned.task_checkpoint`) is bound to the task model's
weights and the cut point; ``codec.yaml`` beside it is its codec entry for a ``vcm run`` config.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from vcm_plugin.config import StrictModel
from vcm_plugin.learned.models import KEEP_FLOAT32, with_default_bounds
from vcm_plugin.learned.task_checkpoint import FORMAT
from vcm_plugin.tasks.split import OUTPUT
from vcm_plugin.training.codec import RDTrainer, RDTrainingConfig, exported_state, random_batch
from vcm_plugin.training.loop import TrainingError, atomic_save

CODEC_NAMES = {"direct": "direct", "feature": "feature-learned"}


class TaskArchConfig(StrictModel):
    """Sizes of the codec network (see :class:`~vcm_plugin.learned.task_nets.TaskNetConfig`)."""

    N: int = Field(64, ge=1)
    M: int = Field(96, ge=1)
    down: int | None = Field(None, ge=0, description="stride-2 analysis steps; default: 4 direct, 1 feature")
    entropy: Literal["hyperprior", "factorized"] = "hyperprior"
    res_blocks: int = Field(2, ge=0, description="residual blocks in the decoder")
    decoder: Literal["plain", "front"] = Field(
        "plain", description="direct coding: 'front' ends the latent decoder with a trainable copy of the task "
                             "model's front layers (after an image-style synthesis)")
    encoder: Literal["plain", "front"] = Field(
        "plain", description="direct coding: 'front' starts the image encoder with a trainable copy of the task "
                             "model's front layers, followed by the feature codec's analysis of Y1 (down: the "
                             "cut's stride-2 steps + the analysis' own, default + 1); the decoder is 'plain'")


class TaskCodecTrainConfig(RDTrainingConfig):
    """Schema of ``eval_configs/train/*.yaml`` for ``vcm train direct`` / ``vcm train feature``."""

    kind: Literal["direct", "feature"] | None = None
    task_model: str
    task_params: dict[str, Any] = Field(default_factory=dict)
    cut: str
    distill: str | None = Field(None, description="distillation point Y2 (default: the cut); 'output' allowed")
    distortion: Literal["mse", "kl", "ce"] = "mse"
    arch: TaskArchConfig = Field(default_factory=TaskArchConfig)
    stats_batches: int = Field(4, ge=1, description="batches used for the feature mean / std")
    init_from: str | None = Field(None, description="start from this task codec export (e.g. another lambda)")
    init_image_codec: str | None = Field(
        None, description="direct coding: start g_a, h_a, h_s (and g_s with decoder: front) and the entropy models "
                          "from this CompressAI bmshj2018-hyperprior of the same N, M (zoo name or file)")
    front_frozen_steps: int = Field(
        0, ge=0, description="arch.encoder: front: the front copy is frozen for this many first steps, then trains")


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
    shift, arch = int(math.log2(stride)), config.arch
    if kind == "direct":
        if arch.encoder == "front":
            if arch.decoder != "plain" or config.init_image_codec:
                raise TrainingError("arch.encoder: 'front' (the split codec's analysis after a front copy) takes "
                                    "arch.decoder: 'plain' and no init_image_codec")
            down = arch.down if arch.down is not None else shift + 1
            if down <= shift:
                raise TrainingError(f"arch.down={down} with encoder 'front' must exceed the cut's {shift} stride-2 "
                                    "steps (the analysis of Y1 adds its own)")
        else:
            down = arch.down if arch.down is not None else max(4, shift)
        if down < shift:
            raise TrainingError(f"arch.down={down} is below the cut's stride 2^{shift}")
        return TaskNetConfig("direct", 3, channels, down, down - shift, arch.N, arch.M, arch.entropy, arch.res_blocks,
                             arch.decoder, arch.encoder)
    if arch.decoder != "plain" or arch.encoder != "plain":
        raise TrainingError("arch.decoder / arch.encoder: 'front' is for direct coding; feature codecs use 'plain'")
    down = arch.down if arch.down is not None else 1
    return TaskNetConfig("feature", channels, channels, down, down, arch.N, arch.M, arch.entropy, arch.res_blocks)


def init_from_image_codec(net: Any, source: str) -> list[str]:
    """Copy the matching tensors of a CompressAI image codec (zoo name or file) into ``net``; returns their keys."""
    from compressai.zoo.pretrained import load_pretrained

    from vcm_plugin.weights import load_state_dict_safely
    from vcm_plugin.zoo import zoo_entries, zoo_file

    entry = zoo_entries().get(source)
    path = zoo_file(entry) if entry is not None else Path(source)
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


def device_front(adapter: Any, device: Any, copy: bool | None = None) -> Any:
    """X -> Y1 without gradients on ``device``: ``adapter.front`` itself on the CPU, else (or with ``copy``) a
    frozen copy of the front layers moved there, after which the task model's layers (the mid-model) are moved
    there too (the model's own input normalisation stays on the CPU, where ``input_tensor`` runs)."""
    from vcm_plugin.tasks.split import freeze

    if not (copy if copy is not None else torch.device(device).type != "cpu"):
        return adapter.front
    front = freeze(adapter.front_module()).to(device)
    adapter.model.network().to(device)

    def run(x: Any) -> Any:
        with torch.no_grad():
            return front(x)

    return run


def distortion(adapter: Any, point: str, kind: str, y1_hat: Any, y1: Any, teacher: list[Any] | None = None) -> Any:
    """d(M(Ŷ1), M(Y1)) (see the module docstring); ``teacher`` = M(Y1) when already computed."""
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
    return sum(-torch.log2(lik).sum() for lik in likelihoods.values()) / pixels


class TaskCodecTrainer(RDTrainer):
    """``vcm train direct|feature``: a task codec network distilled through the frozen task model."""

    Config = TaskCodecTrainConfig

    def __init__(self, config: TaskCodecTrainConfig, command: str = "") -> None:
        from vcm_plugin.learned.task_checkpoint import load_task_codec
        from vcm_plugin.learned.task_nets import build_task_net

        kind = self.kind = str(config.kind)
        super().__init__(config, tags={"kind": kind})
        self.desc = f"train {kind} codec"
        self.adapter = adapter = build_adapter(config)
        self.point = config.distill or config.cut
        arch = net_config(config, kind, adapter, config.data.crop)
        fronts = "front" in (arch.decoder, arch.encoder)
        self.model = net = build_task_net(arch, adapter.front_module() if fronts else None).to(self.device)
        self.front = device_front(adapter, self.device)
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
            xs = [random_batch(self.train_images, config.data.crop, config.data.batch_size, stats_rng)
                  for _ in range(config.stats_batches)]
            y1s = torch.cat([self.front(x.to(self.device)) for x in xs])
            net.set_statistics(y1s, y1s)
        self.setup_optimizers()

    def run_step(self) -> dict[str, float]:
        config = self.config
        x = random_batch(self.train_images, config.data.crop, config.data.batch_size, self.rng).to(self.device)
        if self.model.config.encoder == "front":
            self.model.set_front_trainable(self.step >= config.front_frozen_steps)
        y1 = self.front(x)
        out = self.model(x if self.kind == "direct" else y1, tuple(y1.shape[-2:]))
        bpp = rate_bpp(out["likelihoods"], x.shape[0] * x.shape[2] * x.shape[3])
        dist = distortion(self.adapter, self.point, config.distortion, out["y1_hat"], y1)
        loss = bpp + config.lmbda * dist
        aux_loss = self.model.aux_loss()
        self.optimize(loss, aux_loss)
        values = torch.stack([t.detach().float() for t in (loss, aux_loss, bpp, dist)]).tolist()  # one device sync
        return dict(zip(("loss", "aux", "bpp", "d"), values))

    def validate(self) -> dict[str, float]:
        """Real bitstreams of held-out images at the model's input geometry: bpp over ORIGINAL pixels, d, loss."""
        net, adapter, config = self.model, self.adapter, self.config
        net.eval()
        net.update(force=True)
        bits = pixels = 0
        dists, agree = [], []
        with torch.no_grad():
            for image in self.val_images:
                x = adapter.input_tensor(image).to(self.device)
                y1 = self.front(x)
                out = net.compress(x if self.kind == "direct" else y1)
                y1_hat = net.decompress(out["strings"], out["shape"], tuple(y1.shape[-2:]))
                bits += 8 * sum(len(s[0]) for s in out["strings"])
                pixels += image.shape[0] * image.shape[1]
                dists.append(float(distortion(adapter, self.point, config.distortion, y1_hat, y1)))
                if adapter.task == "classification":
                    agree.append(float(adapter.mid(y1_hat, OUTPUT)[0].argmax(1).eq(
                        adapter.mid(y1, OUTPUT)[0].argmax(1)).float().mean()))
        net.train()
        bpp, dist = bits / pixels, float(np.mean(dists))
        result = {"bpp": bpp, "distortion": dist, "loss": bpp + config.lmbda * dist}
        if agree:
            result["top1_agreement"] = float(np.mean(agree))
        return result

    def export(self, path: Path, best_step: int) -> None:
        """Weights-only export bound to the task model and cut, plus ``codec.yaml`` for ``vcm run``."""
        import yaml

        config, kind = self.config, self.kind
        state = exported_state(self.model, config.export_dtype, (*KEEP_FLOAT32, "_mean", "_std"))
        atomic_save({"format": FORMAT, "paradigm": kind, "net": self.model.config.to_dict(),
                     "binding": self.adapter.identity(), "task_params": json.loads(json.dumps(config.task_params)),
                     "distill": self.point, "distortion": config.distortion, "lmbda": config.lmbda,
                     "state_dict": state, "best_step": best_step}, path)
        entry = {"name": CODEC_NAMES[kind], "task_model": config.task_model, "task_params": config.task_params,
                 "cut": config.cut, "checkpoint": str(path)}
        (path.parent / "codec.yaml").write_text(
            "# the codec entry of this export for a `vcm run` config (qualities: one checkpoint per lambda,\n"
            "# e.g. checkpoint: outputs/train/my-codec-q{quality}/model.pt)\n"
            + yaml.safe_dump(entry, sort_keys=False))

    def finish(self) -> dict[str, Any]:
        return {**super().finish(), "codec": CODEC_NAMES[self.kind], "kind": self.kind}


def train(config: TaskCodecTrainConfig, kind: str, output: Path) -> dict[str, Any]:
    """Train (or resume) a ``kind`` codec into ``output`` and export it; the result."""
    return TaskCodecTrainer(config.model_copy(update={"kind": kind, "output": str(output)})).train()
