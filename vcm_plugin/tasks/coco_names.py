"""The 80 COCO 2017 detection categories: contiguous index (0..79) <-> COCO category id (1..90).

Models trained on COCO (YOLOv5, torchvision's COCO_V1 weights use 91 slots) predict a
contiguous index; results and pycocotools use the official non-contiguous ids. The
table is the ``categories`` block of the official ``instances_val2017.json`` (the
tests check it against ``shared/data/coco/annotations``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: (COCO category id, name) in contiguous-index order, as in the official annotation files.
COCO80: tuple[tuple[int, str], ...] = (
    (1, 'person'), (2, 'bicycle'), (3, 'car'), (4, 'motorcycle'), (5, 'airplane'), (6, 'bus'),
    (7, 'train'), (8, 'truck'), (9, 'boat'), (10, 'traffic light'), (11, 'fire hydrant'), (13, 'stop sign'),
    (14, 'parking meter'), (15, 'bench'), (16, 'bird'), (17, 'cat'), (18, 'dog'), (19, 'horse'),
    (20, 'sheep'), (21, 'cow'), (22, 'elephant'), (23, 'bear'), (24, 'zebra'), (25, 'giraffe'),
    (27, 'backpack'), (28, 'umbrella'), (31, 'handbag'), (32, 'tie'), (33, 'suitcase'), (34, 'frisbee'),
    (35, 'skis'), (36, 'snowboard'), (37, 'sports ball'), (38, 'kite'), (39, 'baseball bat'), (40, 'baseball glove'),
    (41, 'skateboard'), (42, 'surfboard'), (43, 'tennis racket'), (44, 'bottle'), (46, 'wine glass'), (47, 'cup'),
    (48, 'fork'), (49, 'knife'), (50, 'spoon'), (51, 'bowl'), (52, 'banana'), (53, 'apple'),
    (54, 'sandwich'), (55, 'orange'), (56, 'broccoli'), (57, 'carrot'), (58, 'hot dog'), (59, 'pizza'),
    (60, 'donut'), (61, 'cake'), (62, 'chair'), (63, 'couch'), (64, 'potted plant'), (65, 'bed'),
    (67, 'dining table'), (70, 'toilet'), (72, 'tv'), (73, 'laptop'), (74, 'mouse'), (75, 'remote'),
    (76, 'keyboard'), (77, 'cell phone'), (78, 'microwave'), (79, 'oven'), (80, 'toaster'), (81, 'sink'),
    (82, 'refrigerator'), (84, 'book'), (85, 'clock'), (86, 'vase'), (87, 'scissors'), (88, 'teddy bear'),
    (89, 'hair drier'), (90, 'toothbrush'),
)

COCO80_IDS: tuple[int, ...] = tuple(cid for cid, _ in COCO80)
COCO80_NAMES: tuple[str, ...] = tuple(name for _, name in COCO80)
#: COCO category id -> name (the ``categories`` of a COCO task model).
COCO_CATEGORIES: dict[int, str] = dict(COCO80)
COCO_ID_BY_NAME: dict[str, int] = {name: cid for cid, name in COCO80}


def coco_ids_for_names(names: Sequence[str]) -> np.ndarray:
    """COCO category ids (int64) of a model's class names, in the model's index order.

    Raises ``KeyError`` naming the first name that is not a COCO category.
    """
    missing = [n for n in names if n not in COCO_ID_BY_NAME]
    if missing:
        raise KeyError(f"not COCO category names: {missing[:5]}")
    return np.array([COCO_ID_BY_NAME[n] for n in names], dtype=np.int64)


def contiguous_to_coco(indices: np.ndarray) -> np.ndarray:
    """Map contiguous indices 0..79 to COCO category ids 1..90 (int64)."""
    return np.asarray(COCO80_IDS, dtype=np.int64)[np.asarray(indices, dtype=np.int64)]
