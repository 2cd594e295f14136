"""FedProx: FedAvg aggregation plus a proximal term in the local objective."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fuss_ray.federation.strategies.base import LocalObjective, StrategyParams, register_strategy
from fuss_ray.federation.strategies.fedavg import FedAvg


class FedProxParams(StrategyParams):
    name: Literal["fedprox"] = "fedprox"
    mu: float = Field(0.001, ge=0.0, le=1e3)


@register_strategy
class FedProx(FedAvg):
    """Clients minimise their loss + (mu/2)||theta - theta_global||^2 (mu = 0.001 in FUSS)."""

    name = "fedprox"
    Params = FedProxParams  # type: ignore[assignment]

    def local_objective(self) -> LocalObjective:
        assert isinstance(self.params, FedProxParams)
        return LocalObjective(prox_mu=self.params.mu)
