"""FedAvg: everything, centroids included, averaged index by index (the paper's baseline)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.reduction import Reduced
from fuss_ray.federation.strategies.base import (
    CENTROIDS,
    ClientUpdate,
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

    def centroid_references(self, global_centroids: NDArray[np.float32]) -> dict[str, Any]:
        return {CENTROIDS: global_centroids}

    def centroid_summands(
        self, global_centroids: NDArray[np.float32], update: ClientUpdate
    ) -> dict[str, NDArray[Any]]:
        return {CENTROIDS: update.state[CENTROIDS]}

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], reduced: Reduced, server_round: int
    ) -> NDArray[np.float32]:
        return reduced.mean(CENTROIDS)


class FedAvgParams(StrategyParams):
    name: Literal["fedavg"] = "fedavg"


@register_strategy
class FedAvg(IndexAveraging[FedAvgParams]):
    """Everything averaged, weighted by the clients' image counts."""

    name = "fedavg"
    Params = FedAvgParams
