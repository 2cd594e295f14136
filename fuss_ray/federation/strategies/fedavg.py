"""FedAvg: everything, centroids included, averaged index by index (the paper's baseline)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.reduction import Reduced, weighted_mean
from fuss_ray.federation.strategies.base import (
    CENTROIDS,
    Arrays,
    AsyncRule,
    ClientUpdate,
    Contribution,
    ModelState,
    P,
    Strategy,
    StrategyParams,
    register_strategy,
)


class IndexAveraging(Strategy[P]):
    """Index-wise centroid averaging: it ignores that centroid k may mean different things.

    The aggregation of FedAvg and of the baselines that change only the client's side
    (FedProx, MOON, SCAFFOLD).
    """

    def scales(self, global_state: ModelState) -> dict[str, Any]:
        return {CENTROIDS: global_state[CENTROIDS]}

    def contribution(self, global_state: ModelState, update: ClientUpdate) -> Contribution:
        return Contribution(summed={CENTROIDS: update.state[CENTROIDS]})

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], reduced: Reduced, server_round: int
    ) -> NDArray[np.float32]:
        return reduced.mean(CENTROIDS)

    def asynchronous(self) -> AsyncRule | None:
        return IndexChanges()


class IndexChanges(AsyncRule):
    """FedBuff for index-aligned centroids: each moves by the weighted mean of the
    clients' changes of it."""

    def contribution(self, start: NDArray[np.float32], update: ClientUpdate) -> Arrays:
        """Its change of each centroid, index by index."""
        return {CENTROIDS: update.state[CENTROIDS].astype(np.float64) - start}

    def apply(
        self, current: NDArray[np.float32], weights: list[float], parts: list[Arrays], version: int
    ) -> NDArray[np.float32]:
        delta = weighted_mean(weights, parts, CENTROIDS)
        return (current.astype(np.float64) + delta).astype(np.float32)


class FedAvgParams(StrategyParams):
    name: Literal["fedavg"] = "fedavg"


@register_strategy
class FedAvg(IndexAveraging[FedAvgParams]):
    """Everything averaged, weighted by the clients' image counts."""

    name = "fedavg"
    Params = FedAvgParams
