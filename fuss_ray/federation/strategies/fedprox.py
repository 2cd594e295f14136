"""FedProx: FedAvg aggregation plus a proximal term in the local objective."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field

from fuss_ray.federation.objective import ClientObjective, LocalRun, StackRun, per_client_sum
from fuss_ray.federation.strategies.base import StrategyParams, register_strategy
from fuss_ray.federation.strategies.fedavg import IndexAveraging


def proximal_term(
    params: Iterable[torch.Tensor], anchors: Iterable[torch.Tensor], mu: float
) -> torch.Tensor:
    """(mu / 2) * sum ||theta - theta_global||^2."""
    terms = [(p - a.detach()).pow(2).sum() for p, a in zip(params, anchors, strict=True)]
    return 0.5 * mu * torch.stack(terms).sum()


class Proximal(ClientObjective):
    """Keeps the head near the global one it started from, against drift under skew."""

    def __init__(self, mu: float) -> None:
        self.mu = mu
        self.anchors: list[torch.Tensor] = []

    def begin(self, run: LocalRun) -> None:
        self.anchors = [p.detach().clone() for p in run.model.head.parameters()]

    def term(
        self, run: LocalRun, features: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor | None:
        if self.mu <= 0:
            return None
        return proximal_term(run.model.head.parameters(), self.anchors, self.mu)

    def begin_stack(self, run: StackRun) -> None:
        self.anchors = [p.detach().clone() for p in run.head_params().values()]

    def term_stack(
        self, run: StackRun, features: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor | None:
        if self.mu <= 0:
            return None
        params = run.head_params().values()
        terms = [
            (p - a).pow(2).flatten(1).sum(1) for p, a in zip(params, self.anchors, strict=True)
        ]
        return 0.5 * self.mu * per_client_sum(terms)


class FedProxParams(StrategyParams):
    name: Literal["fedprox"] = "fedprox"
    mu: float = Field(0.001, ge=0.0, le=1e3)


@register_strategy
class FedProx(IndexAveraging[FedProxParams]):
    """Clients minimise their loss + (mu/2)||theta - theta_global||^2 (mu = 0.001 in FUSS)."""

    name = "fedprox"
    Params = FedProxParams

    def client_objective(self) -> Proximal:
        return Proximal(self.params.mu)
