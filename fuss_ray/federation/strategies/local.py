"""Local-only training: no federation; each client is scored on its own model."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.reduction import Reduced
from fuss_ray.federation.strategies.base import (
    ClientUpdate,
    ModelState,
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

    # Nothing is averaged: each client's whole state goes back to the server, which scores
    # every client on its own model.
    def summand_references(self, global_state: ModelState) -> dict[str, NDArray[Any]]:
        return {}

    def summed_arrays(
        self, update: ClientUpdate, global_state: ModelState
    ) -> dict[str, NDArray[Any]]:
        return {}

    def pooled_arrays(self, update: ClientUpdate) -> dict[str, NDArray[Any]]:
        return dict(update.state)

    def finish(self, global_state: ModelState, reduced: Reduced, server_round: int) -> ModelState:
        return dict(global_state)  # no global model moves; the server keeps every client's

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], reduced: Reduced, server_round: int
    ) -> NDArray[np.float32]:
        return global_centroids
