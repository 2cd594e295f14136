"""kNN positives for correspondence distillation, mined on one client's data only."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def image_descriptors(features: NDArray[np.float32]) -> NDArray[np.float32]:
    """One L2-normalised vector per image: its (n, D, h, w) feature map averaged over h, w."""
    mean = features.reshape(features.shape[0], features.shape[1], -1).mean(axis=2)
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    out: NDArray[np.float32] = (mean / np.maximum(norm, 1e-12)).astype(np.float32)
    return out


def mine_knn(descriptors: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    """Each image's top-k neighbours by cosine, itself excluded (itself only when alone).

    Positions refer to the rows given, so a client never learns of others' images.
    """
    n = descriptors.shape[0]
    if n == 1:
        return np.zeros((1, 1), dtype=np.int64)
    k = min(k, n - 1)
    sim = descriptors @ descriptors.T
    np.fill_diagonal(sim, -np.inf)
    # Stable ordering on ties keeps mining deterministic.
    order = np.argsort(-sim, axis=1, kind="stable")
    return order[:, :k].astype(np.int64)
