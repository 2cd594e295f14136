"""Centralised training: the union of all clients' data on one client (the upper reference)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.data.partition import Partition
from fuss_ray.federation.strategies.base import (
    CENTROIDS,
    Buffer,
    ClientUpdate,
    Contribution,
    ModelState,
    RunShape,
    Strategy,
    StrategyParams,
    register_strategy,
)

if TYPE_CHECKING:
    from fuss_ray.config import RunConfig


class CentralizedParams(StrategyParams):
    name: Literal["centralized"] = "centralized"
    # per_model: rounds x local_steps, the gradient steps one federated client's model
    # takes (the paper's reference). total: K times that, the federation's whole compute.
    budget: Literal["per_model", "total"] = "per_model"


class Pooled(RunShape):
    """One client holding every training image, trained for its budget."""

    def __init__(self, budget: str) -> None:
        self.budget_kind = budget

    def config(self, config: RunConfig) -> RunConfig:
        """Its steps per round, by its `budget`.

        `per_model` (the default, the paper's reference): local_steps, so the scored model
        takes the gradient steps a federated client's model takes. `total`: K x
        local_steps, the federation's compute, so that the reference does not train on 1/K
        of the steps the federated runs spend. Which one a gap to centralised training
        means depends on this choice; `summary.json`'s `budget` records it.
        """
        k = 1 if self.budget_kind == "per_model" else config.partition.num_clients
        train = config.train.model_copy(update={"local_steps": config.train.local_steps * k})
        return config.model_copy(update={"train": train})

    def partition(self, partition: Partition, num_images: int) -> Partition:
        """One client holding every training image."""
        return Partition([np.arange(num_images, dtype=np.int64)])

    def budget(self) -> dict[str, Any]:
        return {"centralized": self.budget_kind}


@register_strategy
class Centralized(Strategy[CentralizedParams]):
    """One client holds everything; a round is `local_steps` more steps on it (`budget:
    per_model`, the default), or K x `local_steps` (`budget: total`)."""

    name = "centralized"
    Params = CentralizedParams
    asynchronous = False  # one client holding every image: there is nothing to buffer

    def run_shape(self) -> Pooled:
        return Pooled(self.params.budget)

    def contribution(self, global_state: ModelState, update: ClientUpdate) -> Contribution:
        return Contribution(per_client={CENTROIDS: update.state[CENTROIDS]})

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], buffer: Buffer, server_round: int
    ) -> NDArray[np.float32]:
        ((_, only),) = buffer.own()
        return only[CENTROIDS]
