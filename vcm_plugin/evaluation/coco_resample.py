"""COCO AP@[.50:.95] re-accumulated on image resamples from one ``COCOeval.evaluate()``.

:class:`CocoResampler` keeps, from ``COCOeval.evalImgs`` (area ``all``, the last ``maxDets``), each
category's detections in ``accumulate``'s order (``mergesort`` of ``-score`` over the images in
``imgIds`` order) with their true / false positive flags per IoU threshold, and the number of
non-ignored ground-truth objects per (category, image). A resample with image multiplicities
``c`` weighs each detection and ground-truth count by ``c`` of its image: the cumulative TP / FP
sums are those of ``accumulate`` on the image set with each image repeated ``c`` times (copies
adjacent), so the AP is the one ``COCOeval`` gives on that set (up to float rounding, about 1e-13).

Only TP entries are visited per resample: the interpolated precision at a recall threshold is
reached at a TP (FPs only lower precision), so ``sum_r q[r]`` = sum over TPs of (thresholds first
reached there) x (best precision from there on). Units: the AP in percent, as the evaluator.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _segment_starts(seg: np.ndarray, n_seg: int) -> np.ndarray:
    """Index of each segment's first element in a flat array sorted by segment (``n_seg + 1`` bounds)."""
    return np.searchsorted(seg, np.arange(n_seg + 1), side="left")


class CocoResampler:
    """AP (percent) of a COCOeval run on resamples of its images; call with image positions in ``order``."""

    def __init__(self, cocoeval: Any, order: list[int]) -> None:
        """``cocoeval``: after ``evaluate()``; ``order``: the image ids in the caller's (processing) order."""
        p = cocoeval.params
        n_img, n_area = len(p.imgIds), len(p.areaRng)
        area = p.areaRngLbl.index("all")
        max_det = p.maxDets[-1]
        position = {img: k for k, img in enumerate(order)}
        img_pos = np.array([position[i] for i in p.imgIds], dtype=np.int64)  # imgIds order -> caller order
        cats = p.catIds if p.useCats else [-1]
        self.n_images, self.n_cats = len(order), len(cats)
        self.n_iou, self.rec_thrs = len(p.iouThrs), np.asarray(p.recThrs, dtype=np.float64)
        npig = np.zeros((len(cats), len(order)))  # non-ignored ground truth per (category, image)
        det_img, dtm, dtig, det_cat = [], [], [], []
        for k in range(len(cats)):
            evals = [(i, e) for i in range(n_img) if (e := cocoeval.evalImgs[k * n_area * n_img + area * n_img + i])]
            for i, e in evals:
                npig[k, img_pos[i]] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            if not evals:
                continue
            scores = np.concatenate([e["dtScores"][:max_det] for _, e in evals])
            inds = np.argsort(-scores, kind="mergesort")
            det_img.append(np.concatenate([np.full(len(e["dtScores"][:max_det]), img_pos[i]) for i, e in evals])[inds])
            dtm.append(np.concatenate([e["dtMatches"][:, :max_det] for _, e in evals], axis=1)[:, inds])
            dtig.append(np.concatenate([e["dtIgnore"][:, :max_det] for _, e in evals], axis=1)[:, inds])
            det_cat.append(np.full(len(inds), k))
        self.gt_cat, self.gt_img = np.nonzero(npig)  # sparse: a product with the dense matrix is slower
        self.gt_count = npig[self.gt_cat, self.gt_img]
        self.det_img = np.concatenate(det_img) if det_img else np.zeros(0, dtype=np.int64)
        cat = np.concatenate(det_cat) if det_cat else np.zeros(0, dtype=np.int64)
        self.cat_start = _segment_starts(cat, len(cats))[:-1]
        matched = np.concatenate(dtm, axis=1) if dtm else np.zeros((self.n_iou, 0))
        ignored = np.concatenate(dtig, axis=1).astype(bool) if dtig else np.zeros((self.n_iou, 0), dtype=bool)
        tp = (matched != 0) & ~ignored
        # flat (IoU threshold, category) segments: TP positions and ignored positions, each sorted by position
        seg_of = np.arange(self.n_iou)[:, None] * len(cats) + cat[None, :]
        t_idx, self.tp_pos = np.nonzero(tp)
        self.tp_seg = seg_of[t_idx, self.tp_pos]
        ti, self.ig_pos = np.nonzero(ignored)
        ig_seg = seg_of[ti, self.ig_pos]
        n_seg = self.n_iou * len(cats)
        self.tp_bounds = _segment_starts(self.tp_seg, n_seg)
        ig_bounds = _segment_starts(ig_seg, n_seg)
        # ignored entries of the same segment before each TP: flat index range [ig_lo, ig_hi)
        self.ig_lo = ig_bounds[self.tp_seg]
        span = len(cat) + 1
        self.ig_hi = np.searchsorted(ig_seg * span + self.ig_pos, self.tp_seg * span + self.tp_pos)
        self.tp_cat = self.tp_seg % len(cats)
        self.first_in_seg = np.zeros(len(self.tp_seg), dtype=bool)
        self.first_in_seg[self.tp_bounds[:-1][self.tp_bounds[:-1] < len(self.tp_seg)]] = True

    def __call__(self, idx: np.ndarray) -> float:
        """AP@[.50:.95] in percent over the images at positions ``idx`` (repeats count); NaN: no ground truth."""
        counts = np.bincount(np.asarray(idx, dtype=np.int64), minlength=self.n_images).astype(np.float64)
        npig = np.bincount(self.gt_cat, weights=self.gt_count * counts[self.gt_img], minlength=self.n_cats)
        valid = npig > 0
        if not valid.any():
            return float("nan")
        w = counts[self.det_img]
        cw = np.concatenate([[0.0], np.cumsum(w)])
        w_tp = w[self.tp_pos]
        ctp_all = np.concatenate([[0.0], np.cumsum(w_tp)])
        tp = ctp_all[1:] - ctp_all[self.tp_bounds[self.tp_seg]]
        cig = np.concatenate([[0.0], np.cumsum(w[self.ig_pos])])
        seen = cw[self.tp_pos + 1] - cw[self.cat_start[self.tp_cat]]  # detections up to this TP in its category
        fp = seen - tp - (cig[self.ig_hi] - cig[self.ig_lo])
        with np.errstate(divide="ignore", invalid="ignore"):
            rc = tp / npig[self.tp_cat]
        pr = tp / (fp + tp + np.spacing(1))
        # best precision from each TP on, within its segment (segments are kept apart by an offset of 2 each)
        shift = 2.0 * self.tp_seg
        env = np.maximum.accumulate((pr - shift)[::-1])[::-1] + shift
        reached = np.searchsorted(self.rec_thrs, np.where(valid[self.tp_cat], rc, 0.0), side="right")
        new = np.diff(reached, prepend=0)
        new[self.first_in_seg] = reached[self.first_in_seg]
        total = float(np.sum(new * env * valid[self.tp_cat]))
        return 100.0 * total / (self.n_iou * len(self.rec_thrs) * int(valid.sum()))
