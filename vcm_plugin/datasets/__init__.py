"""Datasets: COCO, the embedded sample, and (later) OpenImages, ImageNet, image folders."""

from vcm_plugin.datasets.base import Dataset, DatasetError, Sample
from vcm_plugin.datasets.coco import CocoDataset, CocoSampleDataset, read_image_ids
from vcm_plugin.datasets.registry import dataset_names, get_dataset, register_dataset

__all__ = ["CocoDataset", "CocoSampleDataset", "Dataset", "DatasetError", "Sample", "dataset_names", "get_dataset",
           "read_image_ids", "register_dataset"]
