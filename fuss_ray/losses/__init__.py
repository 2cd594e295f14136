"""STEGO's losses, which every client minimises, one per module: correspondence, cluster.

Terms that a federation strategy adds (FedProx's proximal term, MOON's contrastive term)
live with their strategy in `fuss_ray.federation.strategies`.
"""

from fuss_ray.losses.cluster import cluster_loss
from fuss_ray.losses.correspondence import (
    CorrespondenceLoss,
    Draws,
    correspondence_term,
    derangement,
    sample_at,
)
from fuss_ray.losses.sampling import bilinear_sample

__all__ = [
    "CorrespondenceLoss",
    "Draws",
    "bilinear_sample",
    "cluster_loss",
    "correspondence_term",
    "derangement",
    "sample_at",
]
