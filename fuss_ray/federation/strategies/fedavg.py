"""FedAvg: everything, centroids included, averaged index by index (the paper's baseline)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.strategies.base import (
    CENTROIDS,
    Buffer,
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
        self, global_centroids: NDArray[np.float32], buffer: Buffer, server_round: int
    ) -> NDArray[np.float32]:
        return buffer.mean(CENTROIDS)


class FedAvgParams(StrategyParams):
    name: Literal["fedavg"] = "fedavg"


@register_strategy
class FedAvg(IndexAveraging[FedAvgParams]):
    """Everything averaged, weighted by the clients' image counts."""

    name = "fedavg"
    Params = FedAvgParams
