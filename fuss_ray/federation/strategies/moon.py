"""MOON: FedAvg aggregation plus a model-contrastive term in the local objective."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fuss_ray.federation.strategies.base import LocalObjective, StrategyParams, register_strategy
from fuss_ray.federation.strategies.fedavg import FedAvg


class MoonParams(StrategyParams):
    name: Literal["moon"] = "moon"
    tau: float = Field(0.5, gt=0.0, le=100.0)
    weight: float = Field(1.0, ge=0.0, le=1e3)


@register_strategy
class Moon(FedAvg):
    """Pulls local codes toward the global model's, away from the previous local model's."""

    name = "moon"
    Params = MoonParams  # type: ignore[assignment]

    def local_objective(self) -> LocalObjective:
        assert isinstance(self.params, MoonParams)
        return LocalObjective(moon_weight=self.params.weight, moon_tau=self.params.tau)
