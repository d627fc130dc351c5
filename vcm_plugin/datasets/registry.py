"""The dataset registry: built-ins plus the ``vcm_plugin.datasets`` entry-point group."""

from __future__ import annotations

from typing import Any

from vcm_plugin.datasets.base import Dataset, DatasetError
from vcm_plugin.plugins import PluginRegistry

ENTRY_POINT_GROUP = "vcm_plugin.datasets"
BUILTIN_MODULES = ("vcm_plugin.datasets.coco",  # imported so that their @register_dataset runs
                   "vcm_plugin.datasets.openimages", "vcm_plugin.datasets.imagenet",
                   "vcm_plugin.datasets.cifar10")

DATASETS: PluginRegistry[Dataset] = PluginRegistry(
    "dataset", Dataset, ENTRY_POINT_GROUP, BUILTIN_MODULES, DatasetError, DatasetError, DatasetError)

register_dataset = DATASETS.register
get_dataset_class = DATASETS.get_class
dataset_names = DATASETS.names


def get_dataset(name: str, **params: Any) -> Dataset:
    """Build the dataset registered as ``name`` with ``params`` (e.g. ``images_dir``, ``annotations``)."""
    return DATASETS.create(name, **params)
