"""Datasets (images with ground-truth masks) and the partitioners that split them."""

from fuss_ray.data.base import IGNORE_INDEX, SegmentationDataset
from fuss_ray.data.partition import Partition, make_partition

__all__ = ["IGNORE_INDEX", "Partition", "SegmentationDataset", "make_partition"]
