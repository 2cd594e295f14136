"""Local-only training: no federation; each client is scored on its own model."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.strategies.base import (
    ClientUpdate,
    Strategy,
    StrategyParams,
    register_strategy,
)


class LocalParams(StrategyParams):
    name: Literal["local"] = "local"


@register_strategy
class LocalOnly(Strategy):
    """Clients never exchange anything; the server only scores them (mean over clients)."""

    name = "local"
    Params = LocalParams
    federated = False

    def aggregate_centroids(
        self,
        global_centroids: NDArray[np.float32],
        updates: list[ClientUpdate],
        weights: NDArray[np.float64],
        server_round: int,
    ) -> NDArray[np.float32]:
        return global_centroids
