"""Frozen backbones and the on-disk cache of their dense features."""

from fuss_ray.features.backbone import DenseBackbone, create_backbone, resolve_weights
from fuss_ray.features.cache import FeatureStore, ensure_features

__all__ = ["DenseBackbone", "FeatureStore", "create_backbone", "ensure_features", "resolve_weights"]
