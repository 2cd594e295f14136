"""FUSS's FedCC: pick C global centroids from the pool of all clients' centroids.

Pooling sidesteps the permutation ambiguity that breaks index-wise averaging: a client's
centroid enters the global set because it is far from what is already chosen (maximin) or
because it is a cluster centre of the pool (k-means), never because of its index.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from fuss_ray.federation.reduction import Reduced
from fuss_ray.federation.strategies.base import (
    CENTROIDS,
    ClientUpdate,
    P,
    Strategy,
    StrategyParams,
    register_strategy,
)
from fuss_ray.seeds import Stream, seed_stream


def centroid_pool(reduced: Reduced) -> NDArray[np.float64]:
    """All accepted clients' centroids, client-major by id: row k*C + c is k's centroid c."""
    ids = sorted(r.client_id for r in reduced.accepted())
    return np.concatenate([reduced.per_client[c][CENTROIDS].astype(np.float64) for c in ids])


class _FromThePool(Strategy[P]):
    """Strategies that need every client's centroids one by one (they are small)."""

    def centroid_per_client(self, update: ClientUpdate) -> dict[str, NDArray[Any]]:
        return {CENTROIDS: update.state[CENTROIDS]}


def maximin_select(pool: NDArray[np.float64], count: int) -> NDArray[np.int64]:
    """Farthest-point selection from row 0: each pick maximises its distance to those chosen."""
    chosen = [0]
    nearest = np.linalg.norm(pool - pool[0], axis=1)
    for _ in range(1, min(count, len(pool))):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(pool - pool[nxt], axis=1))
    return np.asarray(chosen, dtype=np.int64)


class MaximinParams(StrategyParams):
    name: Literal["fuss-maximin"] = "fuss-maximin"


@register_strategy
class FussMaximin(_FromThePool[MaximinParams]):
    """FedCC with maximin selection (the FUSS default)."""

    name = "fuss-maximin"
    Params = MaximinParams

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], reduced: Reduced, server_round: int
    ) -> NDArray[np.float32]:
        pool = centroid_pool(reduced)
        picked = maximin_select(pool, len(global_centroids))
        return pool[picked].astype(np.float32)


class KMeansParams(StrategyParams):
    name: Literal["fuss-kmeans"] = "fuss-kmeans"
    iterations: int = Field(50, ge=1, le=10_000)


@register_strategy
class FussKMeans(_FromThePool[KMeansParams]):
    """FedCC with k-means on the pool; seeded, so rounds are reproducible."""

    name = "fuss-kmeans"
    Params = KMeansParams

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], reduced: Reduced, server_round: int
    ) -> NDArray[np.float32]:
        from scipy.cluster.vq import kmeans2

        pool = centroid_pool(reduced)
        count = len(global_centroids)
        if len(pool) <= count:
            return pool[:count].astype(np.float32) if len(pool) == count else global_centroids
        rng = np.random.default_rng(seed_stream(Stream.KMEANS, self.seed, server_round))
        centres, _ = kmeans2(pool, count, iter=self.params.iterations, minit="++", seed=rng)
        return np.asarray(centres, dtype=np.float32)
