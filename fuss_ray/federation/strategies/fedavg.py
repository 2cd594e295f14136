"""FedAvg: everything, centroids included, averaged index by index (the paper's baseline)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.strategies.base import (
    CENTROIDS,
    ClientUpdate,
    Strategy,
    StrategyParams,
    register_strategy,
    weighted_average,
)


class FedAvgParams(StrategyParams):
    name: Literal["fedavg"] = "fedavg"


@register_strategy
class FedAvg(Strategy):
    """Index-wise centroid averaging: it ignores that centroid k may mean different things."""

    name = "fedavg"
    Params = FedAvgParams

    def aggregate_centroids(
        self,
        global_centroids: NDArray[np.float32],
        updates: list[ClientUpdate],
        weights: NDArray[np.float64],
        server_round: int,
    ) -> NDArray[np.float32]:
        return weighted_average([u.state[CENTROIDS] for u in updates], weights)
