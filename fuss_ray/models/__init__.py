"""The trainable part of FUSS: a segmentation head and its semantic centroids."""

from fuss_ray.models.head import FussModel, SegmentationHead, load_model_state, model_state

__all__ = ["FussModel", "SegmentationHead", "load_model_state", "model_state"]
