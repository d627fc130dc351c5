"""The MPEG CTC models here: detectron2 forward times, split equality, and fcm-vvc at the FPN cut.

On the OpenImages images in ``../shared`` (3 of the VCM detection list), with RANDOM weights
(none can be had offline; shapes and costs are those of the real networks, detections are not):

1. forward seconds per image of each detectron2 model-zoo config (test-time resize as in the
   config: short side 800, long side at most 1333), mean over the images after one warm-up, on
   ``--threads`` threads;
2. for Faster R-CNN X101-FPN, whether ``run_from(cut, front(cut, image))`` equals the whole
   model's predictions exactly (boxes, scores, classes) at every cut point;
3. fcm-vvc at the ``fpn`` cut (P2..P6) of Faster R-CNN X101-FPN at ``--qp``: bytes per image of
   the stream in mode ``full`` (everything in the stream) and mode ``ctc`` (one packed frame over
   the images' global range, measured first as ``vcm layers --cut fpn --images`` does), the
   side-information bytes mode ``ctc`` leaves out of the rate, bpp, and encode / decode seconds.

Run: `.venv/bin/python benchmarks/fcm_detectron2.py` (`--threads 2 --qp 37 --preset faster`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("VCM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CONFIGS = ["COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
           "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml",
           "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml"]
X101 = CONFIGS[2]


def same(a, b) -> bool:
    import numpy as np

    return (np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.labels, b.labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--qp", type=int, default=37)
    parser.add_argument("--preset", default="faster")
    args = parser.parse_args()

    import numpy as np
    import torch

    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.images.io import read_image
    from vcm_plugin.splitting.layers import value_ranges
    from vcm_plugin.tasks.registry import get_task_model

    torch.set_num_threads(args.threads)
    files = sorted((SHARED / "data/openimages/images").glob("*.jpg"))
    if not files:
        sys.exit(f"no OpenImages images in {SHARED / 'data/openimages/images'} (set VCM_SHARED)")
    images = [read_image(p) for p in files]
    sizes = ", ".join(f"{i.shape[1]}x{i.shape[0]}" for i in images)
    print(f"{len(images)} OpenImages images ({sizes}), random weights, {args.threads} threads\n")
    print(f"{'detectron2 config':<58}{'forward s/image':>16}")
    models = {}
    for config in CONFIGS:
        model = models[config] = get_task_model("detectron2", config=config, weights_file="random")
        model.predict(images[0])  # warm-up: builds the network
        start = time.perf_counter()
        for image in images:
            model.predict(image)
        print(f"{config:<58}{(time.perf_counter() - start) / len(images):16.2f}")

    model = models[X101]
    print(f"\nsplit equality, {X101} (run_from(cut, front(cut, x)) == predict(x), every image):")
    whole = [model.predict(image) for image in images]
    for cut in model.cut_points():
        equal = all(same(model.run_from(cut, model.front(cut, image)), w) for image, w in zip(images, whole))
        print(f"  {cut:<8} {'exact' if equal else 'DIFFERS'}")

    params = {"task_model": "detectron2", "task_params": {"config": X101, "weights_file": "random"}, "cut": "fpn",
              "preset": args.preset, "threads": 1}
    ranges = value_ranges("detectron2", params["task_params"], "fpn", [str(p) for p in files])
    low, high = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
    print(f"\nfcm-vvc at cut fpn (P2..P6), QP {args.qp}, preset {args.preset}; ctc value_range [{low:.4g}, {high:.4g}]"
          f" (these images):")
    print(f"  {'mode':<6}{'stream B/img':>14}{'side info B/img':>17}{'bpp':>9}{'encode s':>10}{'decode s':>10}")
    for mode in ("full", "ctc"):
        extra = {"value_range": [low, high]} if mode == "ctc" else {}
        codec = get_codec("fcm-vvc", **params, mode=mode, **extra)
        data, side, bits, pixels, enc, dec = [], [], 0, 0, [], []
        for image in images:
            t0 = time.perf_counter()
            stream = codec.encode(image, args.qp)
            t1 = time.perf_counter()
            codec.decode(stream)
            dec.append(time.perf_counter() - t1)
            enc.append(t1 - t0)
            data.append(len(stream.data))
            side.append(len(stream.side_info))
            bits, pixels = bits + stream.num_bits, pixels + stream.num_pixels
        print(f"  {mode:<6}{np.mean(data):14.0f}{np.mean(side):17.0f}{bits / pixels:9.4f}{np.mean(enc):10.1f}"
              f"{np.mean(dec):10.1f}")
    print(f"\nmachine: {os.cpu_count()} cpus, torch {torch.__version__}")


if __name__ == "__main__":
    main()
