"""Local-only training: no federation; each client is scored on its own model."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.objective import ClientObjective, LocalRun
from fuss_ray.federation.reduction import Reduced
from fuss_ray.federation.strategies.base import (
    ClientUpdate,
    ModelState,
    Strategy,
    StrategyParams,
    register_strategy,
)
from fuss_ray.federation.types import Arrays, Broadcast


class OwnModel(ClientObjective):
    """Each client goes on from its own model (the global initial state the first time)."""

    kept_states: ClassVar[int] = 1

    def start_state(self, broadcast: Broadcast, kept: Arrays | None) -> ModelState:
        return broadcast.state if kept is None else kept

    def end(self, run: LocalRun, trained: ModelState) -> tuple[Arrays | None, Arrays]:
        return dict(trained), {}


class LocalParams(StrategyParams):
    name: Literal["local"] = "local"


@register_strategy
class LocalOnly(Strategy[LocalParams]):
    """Clients never exchange anything; the server only scores them (mean over clients)."""

    name = "local"
    Params = LocalParams
    federated = False

    def client_objective(self) -> OwnModel:
        return OwnModel()

    # Nothing is averaged: each client's whole state goes back to the server, which scores
    # every client on its own model.
    def summand_references(self, global_state: ModelState) -> dict[str, NDArray[Any]]:
        return {}

    def summed_arrays(
        self, update: ClientUpdate, global_state: ModelState
    ) -> dict[str, NDArray[Any]]:
        return {}

    def per_client_arrays(self, update: ClientUpdate) -> Arrays:
        return dict(update.state)

    def finish(self, global_state: ModelState, reduced: Reduced, server_round: int) -> ModelState:
        return dict(global_state)  # no global model moves; the server keeps every client's

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], reduced: Reduced, server_round: int
    ) -> NDArray[np.float32]:
        return global_centroids
