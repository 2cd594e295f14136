"""FUSS's local objective, one loss per module: correspondence, cluster, proximal, MOON."""

from fuss_ray.losses.cluster import cluster_loss
from fuss_ray.losses.correspondence import (
    CorrespondenceLoss,
    correspondence_term,
    derangement,
    sample_at,
)
from fuss_ray.losses.moon import moon_loss
from fuss_ray.losses.proximal import proximal_term

__all__ = [
    "CorrespondenceLoss",
    "cluster_loss",
    "correspondence_term",
    "derangement",
    "moon_loss",
    "proximal_term",
    "sample_at",
]
