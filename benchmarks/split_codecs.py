"""Speed and memory of the split-inference codecs: fcm-vvc, feature-learned and direct.

For YOLOv5n cut after layer 4 (the task model's own letterbox: a COCO image of about
640x480 becomes a 640x480..640 input; Y1 is 64 x H/8 x W/8), prints per codec:
encode and decode milliseconds per image (wall, one thread, mean over ``--images`` COCO
val2017 images, after one warm-up image; the encode of fcm-vvc and feature-learned
includes running the task model's front, which is part of their encoder; direct coding
never runs it), bpp, and the peak RSS (MiB) of a fresh process that codes one image
(interpreter + torch + model included). Then the training throughput (steps/s, images/s)
of `vcm train direct` and `vcm train feature` at the stated crop and batch, on one thread.

The learned codecs use ``--direct`` / ``--feature`` exports when given (e.g.
outputs/train/direct-yolov5n-q2/model.pt); otherwise a codec is trained for a few steps
into a temporary folder first (its timings are then those of an untrained network: same
architecture and cost per pixel, different rate).

Run: `.venv/bin/python benchmarks/split_codecs.py` (`--images 8 --crop 192 --batch 8`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _memory import peak_rss_of_this_process_mib  # benchmarks/ is the script folder

SHARED = Path(os.environ.get("VCM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TASK = {"task_model": "yolov5", "task_params": {"weights": "yolov5n.pt", "search_path": [str(SHARED / "weights")]},
        "cut": "layer.4"}


def train_config(kind: str, output: Path, crop: int, batch: int, steps: int) -> dict:
    arch = {"N": 48, "M": 96, "decoder": "front"} if kind == "direct" else {"N": 48, "M": 96, "down": 1}
    return {"kind": kind, "output": str(output), **TASK, "distill": "layer.9", "distortion": "mse", "lmbda": 4.0,
            "arch": arch, "data": {"train": [str(SHARED / "data/coco/train2017")], "val_count": 1, "crop": crop,
                                   "batch_size": batch, "small_images": "skip", "max_val_pixels": 64 * 64},
            "steps": steps, "warmup_steps": 1, "threads": 1, "checkpoint_every": 10_000, "val_every": 10_000}


def training_speed(kind: str, output: Path, crop: int, batch: int, steps: int) -> tuple[float, Path]:
    """(steps per second of the timed steps, the export) of a short `vcm train <kind>` run."""
    from vcm_plugin.training import task_codec

    config = task_codec.TaskCodecTrainConfig(**train_config(kind, output, crop, batch, steps))
    times: list[float] = []
    real = task_codec.rate_bpp

    def timed(*args, **kwargs):  # called once per training step
        times.append(time.perf_counter())
        return real(*args, **kwargs)

    task_codec.rate_bpp = timed
    try:
        task_codec.train(config, kind, output)
    finally:
        task_codec.rate_bpp = real
    span = times[-1] - times[2]  # the first steps are warm-up
    return (len(times) - 3) / span if span > 0 else float("nan"), output / "model.pt"


def _child(name: str, params: dict, quality: int, path: str, queue) -> None:
    import torch

    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.images.io import read_image

    torch.set_num_threads(1)
    codec, image = get_codec(name, **params), read_image(path)
    codec.decode(codec.encode(image, quality))
    queue.put(peak_rss_of_this_process_mib())


def peak_rss_mib(name: str, params: dict, quality: int, path: Path) -> float:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, params, quality, str(path), queue))
    proc.start()
    proc.join()
    return queue.get() if proc.exitcode == 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=23)
    parser.add_argument("--direct", help="a `vcm train direct` export for YOLOv5n layer.4")
    parser.add_argument("--feature", help="a `vcm train feature` export for YOLOv5n layer.4")
    args = parser.parse_args()

    import numpy as np
    import torch

    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.images.io import read_image

    torch.set_num_threads(1)
    images_dir = SHARED / "data/coco/val2017"
    files = sorted(images_dir.glob("*.jpg"))[: args.images + 1]
    if len(files) < 2:
        sys.exit(f"COCO val2017 images not found in {images_dir} (set VCM_SHARED)")
    tmp = Path(tempfile.mkdtemp(prefix="vcm-split-bench-"))
    print(f"training throughput, one thread, crop {args.crop}x{args.crop}, batch {args.batch}, "
          f"YOLOv5n cut layer.4, distillation at layer.9:")
    exports = {"direct": args.direct, "feature": args.feature}
    for kind in ("direct", "feature"):
        speed, export = training_speed(kind, tmp / kind, args.crop, args.batch, args.train_steps)
        print(f"  vcm train {kind:<8} {speed:6.2f} steps/s  {speed * args.batch:6.1f} images/s")
        exports[kind] = exports[kind] or str(export)

    codecs = {
        "fcm-vvc": ({**TASK, "preset": "faster", "threads": 1}, 37),
        "feature-learned": ({**TASK, "checkpoint": exports["feature"]}, 1),
        "direct": ({**TASK, "checkpoint": exports["direct"]}, 1),
    }
    images = [read_image(p) for p in files]
    print(f"\ncoding {args.images} COCO val2017 images (one thread; fcm-vvc at QP 37, preset faster), YOLOv5n layer.4:")
    print(f"  {'codec':<16}{'bpp':>8}{'encode ms':>12}{'decode ms':>12}{'peak RSS MiB':>14}")
    for name, (params, quality) in codecs.items():
        codec = get_codec(name, **params)
        codec.decode(codec.encode(images[0], quality))  # warm-up: loads the models
        enc, dec, bits, pixels = [], [], 0, 0
        for image in images[1:]:
            t0 = time.perf_counter()
            stream = codec.encode(image, quality)
            t1 = time.perf_counter()
            codec.decode(stream)
            dec.append(time.perf_counter() - t1)
            enc.append(t1 - t0)
            bits += 8 * len(stream.data)
            pixels += image.shape[0] * image.shape[1]
        rss = peak_rss_mib(name, params, quality, files[1])
        print(f"  {name:<16}{bits / pixels:8.4f}{1000 * np.mean(enc):12.1f}{1000 * np.mean(dec):12.1f}{rss:14.0f}")
    print(f"\nmachine: {os.cpu_count()} cpus, torch {torch.__version__}; temporary exports in {tmp}")


if __name__ == "__main__":
    main()
