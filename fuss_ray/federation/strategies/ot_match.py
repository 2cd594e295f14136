"""Optimal-transport matching: align each client's centroids to the global ones, then average.

Unlike FedCC, which throws away all but C pooled vectors, matching keeps every client's
information: a transport plan says which of its centroids plays the role of each global
centroid, and the aligned centroids are averaged with data weights.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from fuss_ray.federation.strategies.base import (
    CENTROIDS,
    Buffer,
    ClientUpdate,
    Contribution,
    ModelState,
    Strategy,
    StrategyParams,
    register_strategy,
)


class OTMatchParams(StrategyParams):
    name: Literal["ot-match"] = "ot-match"
    method: Literal["exact", "sinkhorn"] = "exact"
    masses: Literal["uniform", "occupancy"] = "uniform"
    epsilon: float = Field(0.05, gt=0.0, le=100.0, description="sinkhorn: entropic weight")
    smoothing: float = Field(1e-3, ge=0.0, le=1.0, description="added to occupancies")


def transport_plan(
    client: NDArray[np.float64],
    target: NDArray[np.float64],
    source_mass: NDArray[np.float64],
    method: str,
    epsilon: float,
) -> NDArray[np.float64]:
    """Plan (C_client x C_global) moving client centroids onto global ones at least cost.

    Exact transport between two uniform measures of the same size is an assignment (an
    optimal plan is a permutation, Birkhoff), which scipy solves in microseconds; the
    plan is that permutation with mass 1/C, the plan POT's `emd` returns (a test checks
    it). POT serves every other case; importing it takes seconds of a core (it imports
    scikit-learn), paid by each host actor that needs it.
    """
    n = len(target)
    if method == "exact" and len(client) == n and np.all(source_mass == source_mass[0]):
        # Imported here, as POT is: the registry imports this module in every process.
        from scipy.optimize import linear_sum_assignment
        from scipy.spatial.distance import cdist

        rows, cols = linear_sum_assignment(cdist(client, target, metric="sqeuclidean"))
        plan = np.zeros((n, n))
        plan[rows, cols] = source_mass[0]
        return plan
    import ot  # POT, imported where it is used: configs are checked without it

    cost = ot.dist(client, target, metric="sqeuclidean")
    cost = cost / max(float(cost.max()), 1e-12)
    target_mass = np.full(n, 1.0 / n)
    if method == "exact":
        return np.asarray(ot.emd(source_mass, target_mass, cost), dtype=np.float64)
    return np.asarray(ot.sinkhorn(source_mass, target_mass, cost, reg=epsilon), dtype=np.float64)


ALIGNED = "centroids.aligned"


@register_strategy
class OTMatch(Strategy[OTMatchParams]):
    """Per client: plan P to the global centroids; aligned_j = sum_i P_ij mu_i / sum_i P_ij."""

    name = "ot-match"
    Params = OTMatchParams

    # The plan is solved on the client's host, against the round's global centroids, so
    # only the aligned centroids (one weighted sum per host) travel to the server.
    def scales(self, global_state: ModelState) -> dict[str, Any]:
        return {ALIGNED: global_state[CENTROIDS]}

    def contribution(self, global_state: ModelState, update: ClientUpdate) -> Contribution:
        return Contribution(summed={ALIGNED: self._aligned(global_state[CENTROIDS], update)})

    def _aligned(
        self, global_centroids: NDArray[np.float32], update: ClientUpdate
    ) -> NDArray[np.float64]:
        target = global_centroids.astype(np.float64)
        mine = update.state[CENTROIDS].astype(np.float64)
        if self.params.masses == "occupancy":
            mass = update.occupancy.astype(np.float64) + self.params.smoothing
        else:
            mass = np.ones(len(mine))
        plan = transport_plan(
            mine, target, mass / mass.sum(), self.params.method, self.params.epsilon
        )
        column = plan.sum(axis=0, keepdims=True)
        aligned: NDArray[np.float64] = (plan / np.maximum(column, 1e-300)).T @ mine
        return aligned

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], buffer: Buffer, server_round: int
    ) -> NDArray[np.float32]:
        # In a FedBuff buffer a stale client's centroids were aligned to the centroids it
        # started from: a change in the global centroids' own index frame, whatever order
        # the client's are in, applied to the current ones.
        return buffer.mean(ALIGNED, like=CENTROIDS)
