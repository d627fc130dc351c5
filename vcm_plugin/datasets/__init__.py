"""Datasets: COCO, the embedded sample, and (later) OpenImages, ImageNet, image folders."""

from vcm_plugin.datasets.base import Dataset, DatasetError, Sample

__all__ = ["Dataset", "DatasetError", "Sample"]
