"""Local-only training: no federation; each client is scored on its own model."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.objective import ClientObjective, LocalRun, StackRun
from fuss_ray.federation.strategies.base import (
    Buffer,
    ModelState,
    RunShape,
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

    def end_stack(
        self, run: StackRun, trained: list[ModelState]
    ) -> list[tuple[Arrays | None, Arrays]]:
        return [(dict(t), {}) for t in trained]


class OwnModels(RunShape):
    """Nothing is averaged: each client's whole state goes back to the server, which
    scores every client on its own model, and no global model moves."""

    def head_rule(self, configured: str) -> str:
        return "own"

    def client_models(self, buffer: Buffer) -> dict[int, ModelState]:
        return dict(buffer.own())

    def scored_models(
        self, global_state: ModelState, client_states: dict[int, ModelState], client_ids: list[int]
    ) -> dict[int | None, ModelState]:
        """Every client's own model (the initial global one for a client never trained)."""
        return {c: client_states.get(c, global_state) for c in client_ids}


class LocalParams(StrategyParams):
    name: Literal["local"] = "local"


@register_strategy
class LocalOnly(Strategy[LocalParams]):
    """Clients never exchange anything; the server only scores them (mean over clients)."""

    name = "local"
    Params = LocalParams
    asynchronous = False  # no server update to buffer: nothing is merged

    def client_objective(self) -> OwnModel:
        return OwnModel()

    def run_shape(self) -> OwnModels:
        return OwnModels()

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], buffer: Buffer, server_round: int
    ) -> NDArray[np.float32]:
        return global_centroids
