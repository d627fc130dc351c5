"""Training throughput and memory of `vcm train codec` on this CPU.

Runs the training step of :mod:`vcm_plugin.training.codec` (forward, rate-distortion
loss, backward, gradient clipping, AdamW + the auxiliary quantile optimizer) on random
crops of real COCO train2017 images, and prints steps per second, images per second,
megapixels per second and the process's peak RSS (MiB) for the stated architecture,
crop and batch size. The first steps are warm-up and not timed.

Run: `.venv/bin/python benchmarks/training.py` (`--crop 256 --batch 16 --threads 2 --N 128 --M 192`).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="bmshj2018-hyperprior")
    parser.add_argument("--N", type=int, default=48)
    parser.add_argument("--M", type=int, default=96)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import numpy as np
    import torch
    from compressai.losses import RateDistortionLoss

    from vcm_plugin.learned.models import build_model
    from vcm_plugin.training.codec import CodecTrainConfig, load_images, make_optimizers, random_batch

    torch.set_num_threads(args.threads)
    shared = Path(os.environ.get("VCM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    files = sorted((shared / "data" / "coco" / "train2017").glob("*.jpg"))[:20]
    if not files:
        sys.exit(f"no training images under {shared}/data/coco/train2017 (set VCM_SHARED)")
    images = load_images(files, args.crop)
    config = CodecTrainConfig(output="-", lmbda=0.0067, data={"train": ["-"]}, steps=args.steps,
                              arch_params={"N": args.N, "M": args.M}, architecture=args.architecture)
    model = build_model(args.architecture, N=args.N, M=args.M).train()
    optimizer, aux_optimizer = make_optimizers(model, config)
    criterion = RateDistortionLoss(lmbda=config.lmbda)
    rng = np.random.default_rng(0)
    start = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        x = random_batch(images, args.crop, args.batch, rng)
        out = model(x)
        loss = criterion(out, x)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        aux = model.aux_loss()
        aux_optimizer.zero_grad()
        aux.backward()
        aux_optimizer.step()
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.architecture} N={args.N} M={args.M} ({params / 1e6:.2f} M parameters), crop {args.crop}, "
          f"batch {args.batch}, {args.threads} torch threads, {args.steps} timed steps:")
    print(f"  {args.steps / seconds:.2f} steps/s, {args.steps * args.batch / seconds:.1f} crops/s, "
          f"{args.steps * args.batch * args.crop ** 2 / seconds / 1e6:.2f} MP/s, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
