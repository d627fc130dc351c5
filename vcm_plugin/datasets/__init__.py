"""Datasets: COCO, the embedded sample, OpenImages, ImageNet, CIFAR-10; image files of folders and globs."""

from vcm_plugin.datasets.base import Dataset, DatasetError, Sample
from vcm_plugin.datasets.coco import CocoDataset, CocoSampleDataset, read_image_ids
from vcm_plugin.datasets.folder import list_image_files
from vcm_plugin.datasets.registry import dataset_names, get_dataset, register_dataset

__all__ = ["CocoDataset", "CocoSampleDataset", "Dataset", "DatasetError", "Sample", "dataset_names", "get_dataset",
           "list_image_files", "read_image_ids", "register_dataset"]
