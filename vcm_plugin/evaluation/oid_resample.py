"""The Open Images challenge mAP@0.5 pooled on image resamples from per-image matches.

:class:`OidResampler` takes what :class:`~vcm_plugin.evaluation.oid.OpenImagesEvaluator` keeps per
image (per class: ranked entries' scores and TP weights; the image's ground-truth count per class)
and ranks each class's entries once, as ``_Accumulator.result`` does (images in sorted id order,
``argsort(scores)[::-1]``). A resample with image multiplicities ``c`` weighs every entry and
ground-truth count by ``c`` of its image: the cumulative TP / FP sums are those of the image set
with each image repeated ``c`` times (copies adjacent), so the AP is the metric's on that set.
Only TP entries are visited: AP = sum over TPs of (recall step) x (best precision from there on),
since FPs only lower precision. Units: percent.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class OidResampler:
    """mAP@0.5 (percent) over resamples of the images of ``entries`` (positions in its insertion order)."""

    def __init__(self, entries: Mapping[str, Mapping[int, tuple[np.ndarray, np.ndarray]]],
                 image_gt: Mapping[str, np.ndarray], n_classes: int) -> None:
        position = {image_id: k for k, image_id in enumerate(entries)}
        self.n_images, self.n_classes = len(position), n_classes
        gt = np.array([image_gt[i] for i in entries]).reshape(len(position), n_classes)
        self.gt_img, self.gt_cls = np.nonzero(gt)
        self.gt_count = gt[self.gt_img, self.gt_cls]
        img, cls, labels = [], [], []
        for c in range(n_classes):
            parts = [(position[i], entries[i][c]) for i in sorted(entries) if c in entries[i]]
            if not parts:
                continue
            scores = np.concatenate([p[1][0] for p in parts])
            order = np.argsort(scores)[::-1]
            img.append(np.concatenate([np.full(len(p[1][0]), p[0]) for p in parts])[order])
            labels.append(np.concatenate([p[1][1] for p in parts])[order])
            cls.append(np.full(len(order), c))
        self.entry_img = np.concatenate(img) if img else np.zeros(0, dtype=np.int64)
        entry_cls = np.concatenate(cls) if cls else np.zeros(0, dtype=np.int64)
        label = np.concatenate(labels) if labels else np.zeros(0)
        self.cls_start = np.searchsorted(entry_cls, np.arange(n_classes), side="left")
        self.tp_pos = np.flatnonzero(label > 0)
        self.tp_cls = entry_cls[self.tp_pos]
        self.tp_label = label[self.tp_pos]
        self.tp_start = np.searchsorted(self.tp_cls, np.arange(n_classes), side="left")

    def __call__(self, idx: np.ndarray) -> float:
        """mAP@0.5 in percent over the images at positions ``idx`` (repeats count); NaN: no ground truth."""
        counts = np.bincount(np.asarray(idx, dtype=np.int64), minlength=self.n_images).astype(np.float64)
        num_gt = np.bincount(self.gt_cls, weights=self.gt_count * counts[self.gt_img], minlength=self.n_classes)
        valid = num_gt > 0
        if not valid.any():
            return float("nan")
        w = counts[self.entry_img]
        cw = np.concatenate([[0.0], np.cumsum(w)])
        w_tp = w[self.tp_pos]
        ctp = np.concatenate([[0.0], np.cumsum(w_tp * self.tp_label)])
        cn = np.concatenate([[0.0], np.cumsum(w_tp)])
        start = self.tp_start[self.tp_cls]
        tp = ctp[1:] - ctp[start]
        fp = (cw[self.tp_pos + 1] - cw[self.cls_start[self.tp_cls]]) - (cn[1:] - cn[start])
        seen = tp + fp
        precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
        shift = 2.0 * self.tp_cls  # keeps the classes apart in one running maximum from the right
        env = np.maximum.accumulate((precision - shift)[::-1])[::-1] + shift
        step = w_tp * self.tp_label / np.where(valid, num_gt, 1.0)[self.tp_cls]
        ap = np.bincount(self.tp_cls, weights=step * env * valid[self.tp_cls], minlength=self.n_classes)
        return 100.0 * float(ap[valid].mean())
