"""Tiny updates with hand-picked numbers for strategy tests."""

import numpy as np

from fuss_ray.federation.strategies import ClientUpdate


def update(
    cid: int,
    n: int,
    centroids: list[list[float]],
    head: float = 0.0,
    occupancy: list[float] | None = None,
) -> ClientUpdate:
    c = np.asarray(centroids, dtype=np.float32)
    occ = np.asarray(occupancy if occupancy is not None else [1 / len(c)] * len(c))
    return ClientUpdate(cid, n, {"head.w": np.full(2, head, np.float32), "centroids": c}, occ, 0.0)


def global_state(centroids: list[list[float]]) -> dict[str, np.ndarray]:
    return {"head.w": np.zeros(2, np.float32), "centroids": np.asarray(centroids, np.float32)}
