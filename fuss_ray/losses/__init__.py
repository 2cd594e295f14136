"""STEGO's losses, which every client minimises, one per module: correspondence, cluster.

Terms that a federation strategy adds (FedProx's proximal term, MOON's contrastive term)
live with their strategy in `fuss_ray.federation.strategies`.
"""

from fuss_ray.losses.cluster import cluster_loss
from fuss_ray.losses.correspondence import (
    CorrespondenceLoss,
    correspondence_term,
    derangement,
    sample_at,
)

__all__ = [
    "CorrespondenceLoss",
    "cluster_loss",
    "correspondence_term",
    "derangement",
    "sample_at",
]
