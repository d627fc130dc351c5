"""CIFAR-10 as PNG files (``cifar10``): ``root/<split>/<class>/<name>.png`` and ``root/<split>_labels.csv``.

The labels CSV has ``file,class_index[,class_name]`` (``file`` relative to ``root``; a
``class_name`` must be the standard name of its ``class_index``). Without
it the class sub-folders of ``root/<split>`` are read, with the standard CIFAR-10 class order
(:data:`CIFAR10_CLASSES`: 0 airplane ... 9 truck). Samples follow the ``imagenet`` dataset's
conventions: ``image_id`` is the path relative to ``root`` (e.g.
``test/airplane/aeroplane_s_000002.png``), ``annotations`` ``[{"class_index": int}]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vcm_plugin.datasets.base import DatasetError
from vcm_plugin.datasets.imagenet import Entry, SingleLabelDataset, read_labels, scan_class_folders
from vcm_plugin.datasets.registry import register_dataset
from vcm_plugin.tasks.cifar_vgg import CIFAR10_CLASSES

SPLITS = ("test", "train")


def balanced_selection(order: list[str], classes: dict[str, int], n: int | None) -> list[str]:
    """The first ``n`` images of ``order`` taken round-robin over the classes, kept in ``order``.

    Class c (in ascending class index) gets ``n // C`` images, plus one for the first ``n % C``
    classes, when it has that many; a class with fewer gives its shortfall to the next classes
    in turn. Within a class, its images are taken in ``order``.
    """
    if n is None or n >= len(order):
        return list(order)
    queues: dict[int, list[str]] = {}
    for image_id in order:
        queues.setdefault(classes[image_id], []).append(image_id)
    picked: set[str] = set()
    depth = 0
    while len(picked) < n:
        for cls in sorted(queues):
            if depth < len(queues[cls]) and len(picked) < n:
                picked.add(queues[cls][depth])
        depth += 1
    return [i for i in order if i in picked]


@register_dataset
class Cifar10Dataset(SingleLabelDataset):
    """The CIFAR-10 ``split`` (``"test"``, default, or ``"train"``) under ``root``.

    ``image_ids``: a list of image ids (paths relative to ``root``, or bare file names, which
    are unique in CIFAR-10) or a text file of them; default order: ascending image id, i.e.
    by class folder, then file name. ``max_images``: a deterministic CLASS-BALANCED selection:
    per class the first ``max_images // 10`` images of that order (the first
    ``max_images % 10`` classes by index get one more), see :func:`balanced_selection`.
    ``missing``: ``"error"`` (default) or ``"skip"``, as for ``imagenet``.
    """

    name = "cifar10"

    def __init__(self, root: str | Path, split: str = "test", image_ids: Sequence[str] | str | Path | None = None,
                 max_images: int | None = None, missing: str = "error") -> None:
        if split not in SPLITS:
            raise DatasetError(f"{self.name} dataset: split must be one of {list(SPLITS)}, got {split!r}")
        self.root, self.split = Path(root), split
        if not self.root.is_dir():
            raise DatasetError(f"{self.name} dataset: folder {self.root} does not exist")
        self.num_classes, self.class_names = len(CIFAR10_CLASSES), list(CIFAR10_CLASSES)
        labels = self.root / f"{split}_labels.csv"
        if labels.is_file():
            self.entries, self.labels_sha256 = read_labels(labels, self.root, self.num_classes, None,
                                                              names=CIFAR10_CLASSES)
            origin = str(labels)
        else:
            self.entries = self._scan()
            origin = f"the class folders of {self.root / split}"
        self._choose(image_ids, max_images, missing, origin)

    def _scan(self) -> dict[str, Entry]:
        folder = self.root / self.split
        if not folder.is_dir():
            raise DatasetError(f"{self.name} dataset: {self.root} has neither {self.split}_labels.csv nor the "
                               f"folder {folder}")
        folders = scan_class_folders(folder)
        unknown = [c for c in folders if c not in CIFAR10_CLASSES]
        if unknown:
            raise DatasetError(f"{self.name} dataset: class folder(s) {unknown} of {folder} are not CIFAR-10 "
                               f"classes {list(CIFAR10_CLASSES)}")
        if not folders:
            raise DatasetError(f"{self.name} dataset: {folder} has no class folders with .png images")
        return {f"{self.split}/{cls}/{name}": Entry(folder / cls / name, CIFAR10_CLASSES.index(cls))
                for cls, names in folders.items() for name in names}

    def _limit(self, order: list[str], max_images: int | None) -> list[str]:
        return balanced_selection(order, {i: self.entries[i].class_index for i in order}, max_images)

    def identity(self) -> dict:
        return {**super().identity(), "split": self.split}

