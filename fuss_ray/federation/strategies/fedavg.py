"""FedAvg: everything, centroids included, averaged index by index (the paper's baseline)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.reduction import Reduced
from fuss_ray.federation.strategies.base import (
    CENTROIDS,
    ClientUpdate,
    Strategy,
    StrategyParams,
    register_strategy,
)


class FedAvgParams(StrategyParams):
    name: Literal["fedavg"] = "fedavg"


@register_strategy
class FedAvg(Strategy):
    """Index-wise centroid averaging: it ignores that centroid k may mean different things."""

    name = "fedavg"
    Params = FedAvgParams

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
