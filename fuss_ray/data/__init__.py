"""Datasets (images with ground-truth masks) and the partitioners that split them."""

from fuss_ray.data.base import IGNORE_INDEX, SegmentationDataset, build_datasets
from fuss_ray.data.partition import Partition, make_partition

__all__ = ["IGNORE_INDEX", "Partition", "SegmentationDataset", "build_datasets", "make_partition"]
