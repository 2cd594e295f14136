"""MOON: FedAvg aggregation plus a model-contrastive term in the local objective.

The local representation is pulled toward the global model's and pushed from the client's
previous local model's, which counters client drift without sharing data. Codes are
pooled over the image to one vector per image before they are compared.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from fuss_ray.federation.objective import ClientObjective, LocalRun, StackRun
from fuss_ray.federation.strategies.base import StrategyParams, register_strategy
from fuss_ray.federation.strategies.fedavg import IndexAveraging
from fuss_ray.federation.types import Arrays, ModelState
from fuss_ray.models.head import FussModel, load_model_state
from fuss_ray.models.stacked import StackedParams


def moon_loss(
    local: torch.Tensor, global_: torch.Tensor, previous: torch.Tensor, tau: float
) -> torch.Tensor:
    """-log(e^{sim(z,zg)/tau} / (e^{sim(z,zg)/tau} + e^{sim(z,zp)/tau})), averaged.

    Inputs are (B, D) representations; the global and previous ones carry no gradient.
    """
    pos = F.cosine_similarity(local, global_.detach(), dim=1) / tau
    neg = F.cosine_similarity(local, previous.detach(), dim=1) / tau
    logits = torch.stack([pos, neg], dim=1)
    # The positive (the global model) is class 0; made where the logits are, so that the
    # loss runs on a GPU as on the CPU.
    target = torch.zeros(local.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


class Contrastive(ClientObjective):
    """MOON's term, from a client's second participation on (it needs a previous model)."""

    kept_states: ClassVar[int] = 1  # the client's previous local model

    def __init__(self, weight: float, tau: float) -> None:
        self.weight = weight
        self.tau = tau
        self.reference: tuple[FussModel, FussModel] | None = None  # global, previous
        self.active = False
        self.stacked: tuple[StackedParams, StackedParams] | None = None  # the same, stacked
        self.mask = torch.ones(0)  # 1 for each client of the stack whose term counts

    def begin(self, run: LocalRun) -> None:
        self.active = run.kept is not None and self.weight > 0
        if not self.active:
            return
        if self.reference is None:  # built once per host, reloaded per client
            self.reference = (run.make_model().eval(), run.make_model().eval())
        load_model_state(self.reference[0], run.broadcast.state)
        load_model_state(self.reference[1], run.kept)  # type: ignore[arg-type]

    def term(
        self, run: LocalRun, features: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor | None:
        if not self.active or self.reference is None:
            return None
        glob, prev = self.reference
        with torch.no_grad():
            z_glob = glob.head(features).mean(dim=(2, 3))
            z_prev = prev.head(features).mean(dim=(2, 3))
        return self.weight * moon_loss(codes.mean(dim=(2, 3)), z_glob, z_prev, self.tau)

    def end(self, run: LocalRun, trained: ModelState) -> tuple[Arrays | None, Arrays]:
        return (dict(trained) if self.weight > 0 else None), {}

    def begin_stack(self, run: StackRun) -> None:
        """The stack's two reference models; a client without a previous model (its first
        participation) takes the global one there and its term is masked to 0."""
        active = [k is not None and self.weight > 0 for k in run.kept]
        self.stacked = None
        if not any(active):
            return
        glob = [b.state for b in run.broadcasts]
        prev = [k if k is not None else g for k, g in zip(run.kept, glob, strict=True)]
        self.stacked = (run.stack(glob), run.stack(prev))
        self.mask = torch.tensor(active, dtype=torch.float32).to(run.device)

    def term_stack(
        self, run: StackRun, features: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor | None:
        if self.stacked is None:
            return None
        z_glob = run.head(self.stacked[0], features).mean(dim=(3, 4))  # (G, B, D)
        z_prev = run.head(self.stacked[1], features).mean(dim=(3, 4))
        loss = stacked_moon_loss(codes.mean(dim=(3, 4)), z_glob, z_prev, self.tau)
        return self.weight * loss * self.mask

    def end_stack(
        self, run: StackRun, trained: list[ModelState]
    ) -> list[tuple[Arrays | None, Arrays]]:
        return [((dict(t) if self.weight > 0 else None), {}) for t in trained]


def stacked_moon_loss(
    local: torch.Tensor, global_: torch.Tensor, previous: torch.Tensor, tau: float
) -> torch.Tensor:
    """`moon_loss` per client of (G, B, D) representations: (G,)."""
    pos = F.cosine_similarity(local, global_.detach(), dim=2) / tau
    neg = F.cosine_similarity(local, previous.detach(), dim=2) / tau
    logits = torch.stack([pos, neg], dim=2)
    return -F.log_softmax(logits, dim=2)[..., 0].mean(dim=1)


class MoonParams(StrategyParams):
    name: Literal["moon"] = "moon"
    tau: float = Field(0.5, gt=0.0, le=100.0)
    weight: float = Field(1.0, ge=0.0, le=1e3)


@register_strategy
class Moon(IndexAveraging[MoonParams]):
    """Pulls local codes toward the global model's, away from the previous local model's."""

    name = "moon"
    Params = MoonParams

    def client_objective(self) -> Contrastive:
        return Contrastive(self.params.weight, self.params.tau)
