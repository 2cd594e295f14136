"""Unsupervised segmentation metrics: one confusion matrix, one Hungarian matching."""

from fuss_ray.metrics.segmentation import (
    ConfusionAccumulator,
    confusion_matrix,
    random_assignment_scores,
    unsupervised_scores,
)

__all__ = [
    "ConfusionAccumulator",
    "confusion_matrix",
    "random_assignment_scores",
    "unsupervised_scores",
]
