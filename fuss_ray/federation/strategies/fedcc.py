"""FUSS's FedCC: pick C global centroids from the pool of all clients' centroids.

Pooling sidesteps the permutation ambiguity that breaks index-wise averaging: a client's
centroid enters the global set because it is far from what is already chosen (maximin) or
because it is a cluster centre of the pool (k-means), never because of its index.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from fuss_ray.federation.strategies.base import (
    CENTROIDS,
    Buffer,
    ClientUpdate,
    Contribution,
    ModelState,
    P,
    Strategy,
    StrategyParams,
    register_strategy,
)
from fuss_ray.seeds import Stream, seed_stream


def centroid_pool(buffer: Buffer) -> NDArray[np.float64]:
    """The pool C centroids are chosen from: every accepted client's centroids,
    client-major (row k*C + c is the k-th client's centroid c).

    A FedBuff buffer with stale clients refines the current global set rather than
    replacing it: the current centroids lead the pool (maximin starts from the current
    global centroid 0). A synchronous round's pool is its clients' alone.
    """
    pool = buffer.pool(CENTROIDS)
    if buffer.fresh():
        return pool
    return np.concatenate([buffer.current[CENTROIDS].astype(np.float64), pool])


class _FromThePool(Strategy[P]):
    """Strategies that need every client's centroids one by one (they are small)."""

    def contribution(self, global_state: ModelState, update: ClientUpdate) -> Contribution:
        return Contribution(per_client={CENTROIDS: update.state[CENTROIDS]})


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
        self, global_centroids: NDArray[np.float32], buffer: Buffer, server_round: int
    ) -> NDArray[np.float32]:
        return self.select(centroid_pool(buffer), len(global_centroids), server_round)

    def select(self, pool: NDArray[np.float64], count: int, key: int) -> NDArray[np.float32]:
        return pool[maximin_select(pool, count)].astype(np.float32)


class KMeansParams(StrategyParams):
    name: Literal["fuss-kmeans"] = "fuss-kmeans"
    iterations: int = Field(50, ge=1, le=10_000)


@register_strategy
class FussKMeans(_FromThePool[KMeansParams]):
    """FedCC with k-means on the pool; seeded, so rounds are reproducible."""

    name = "fuss-kmeans"
    Params = KMeansParams

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], buffer: Buffer, server_round: int
    ) -> NDArray[np.float32]:
        pool = centroid_pool(buffer)
        if len(pool) < len(global_centroids):
            return global_centroids
        return self.select(pool, len(global_centroids), server_round)

    def select(self, pool: NDArray[np.float64], count: int, key: int) -> NDArray[np.float32]:
        from scipy.cluster.vq import kmeans2

        if len(pool) == count:
            return pool.astype(np.float32)
        rng = np.random.default_rng(seed_stream(Stream.KMEANS, self.seed, key))
        centres, _ = kmeans2(pool, count, iter=self.params.iterations, minit="++", seed=rng)
        return np.asarray(centres, dtype=np.float32)
