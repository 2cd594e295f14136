"""Centralised training: the union of all clients' data on one client (the upper reference)."""

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


class CentralizedParams(StrategyParams):
    name: Literal["centralized"] = "centralized"
    # per_model: rounds x local_steps, the gradient steps one federated client's model
    # takes (the paper's reference). total: K times that, the federation's whole compute.
    budget: Literal["per_model", "total"] = "per_model"


@register_strategy
class Centralized(Strategy[CentralizedParams]):
    """One client holds everything; a round is `local_steps` more steps on it (`budget:
    per_model`, the default), or K x `local_steps` (`budget: total`)."""

    name = "centralized"
    Params = CentralizedParams
    pools_data = True

    def centroid_per_client(self, update: ClientUpdate) -> dict[str, NDArray[Any]]:
        return {CENTROIDS: update.state[CENTROIDS]}

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], reduced: Reduced, server_round: int
    ) -> NDArray[np.float32]:
        (only,) = reduced.per_client.values()
        return only[CENTROIDS]
