"""SCAFFOLD (Karimireddy et al., 2020): control variates that correct each client's drift.

The server keeps a control variate c (one array per model parameter), each client its own
c_i. Every local step's gradient g is corrected to g - c_i + c, here by adding the term
<theta, c - c_i> to the client's loss, whose gradient is exactly that correction. After
its steps a client sets c_i to the mean of its raw gradients over the steps, which is
what the paper's "option II" update, c_i - c + (x - y) / (K lr), equals under SGD; taking
the gradients themselves keeps the rule right under Adam, which FUSS trains with. The
client sends its change dc_i = c_i(new) - c_i(old) with its model; the server averages the
models as FedAvg does (the head with its server step, the centroids index by index) and
moves c by |S| / N times the clients' mean dc_i.

Departures from the paper, both forced by the setting: the correction goes through Adam's
scaling like any gradient, and means over clients are weighted by their image counts, as
every average in fuss-ray is. c_i is kept between participations (and checkpointed) by the
client's host; c travels with the global state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from fuss_ray.federation.objective import ClientObjective, LocalRun, StackRun, per_client_sum
from fuss_ray.federation.strategies.base import (
    Buffer,
    Contribution,
    StrategyParams,
    register_strategy,
)
from fuss_ray.federation.strategies.fedavg import IndexAveraging
from fuss_ray.federation.types import Arrays, Broadcast, ClientUpdate, ModelState

CONTROL = "control:"  # c, sent with the global state
CHANGE = "dc:"  # a client's change of c_i, summed by the hosts


class ControlVariates(ClientObjective):
    """The client's half: the corrected gradient, and c_i from the raw gradients."""

    kept_states: ClassVar[int] = 1  # c_i: one array per parameter

    def __init__(self) -> None:
        self.correction: dict[str, torch.Tensor] = {}
        self.previous: Arrays = {}
        self.raw_sum: dict[str, torch.Tensor] = {}
        self.steps = 0

    def begin(self, run: LocalRun) -> None:
        params = dict(run.model.named_parameters())
        c = {k: run.broadcast.extras[f"{CONTROL}{k}"] for k in params}
        self.previous = run.kept if run.kept is not None else {k: np.zeros_like(c[k]) for k in c}
        self.correction = {
            k: torch.from_numpy(np.asarray(c[k] - self.previous[k], dtype=np.float32)).to(
                run.device
            )
            for k in params
        }
        self.raw_sum = {k: torch.zeros_like(p) for k, p in params.items()}
        self.steps = 0

    def term(
        self, run: LocalRun, features: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor | None:
        terms = [(p * self.correction[k]).sum() for k, p in run.model.named_parameters()]
        return torch.stack(terms).sum()

    def after_backward(self, run: LocalRun) -> None:
        self._add_raw_gradients(run.model.named_parameters())

    @torch.no_grad()
    def _add_raw_gradients(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """One step's gradients without the correction, into c_i's running sum."""
        for k, p in named:
            if p.grad is not None:
                self.raw_sum[k] += p.grad - self.correction[k]
        self.steps += 1

    def end(self, run: LocalRun, trained: ModelState) -> tuple[Arrays | None, Arrays]:
        steps = max(1, self.steps)
        new = {k: (v / steps).cpu().numpy().astype(np.float32) for k, v in self.raw_sum.items()}
        change = {f"{CHANGE}{k}": new[k] - self.previous[k] for k in new}
        return new, change

    def begin_stack(self, run: StackRun) -> None:
        keys = list(run.params)
        self.stack_previous = [
            k if k is not None else {n: np.zeros_like(b.extras[f"{CONTROL}{n}"]) for n in keys}
            for k, b in zip(run.kept, run.broadcasts, strict=True)
        ]
        self.correction = run.stack(
            [
                {n: b.extras[f"{CONTROL}{n}"] - prev[n] for n in keys}
                for b, prev in zip(run.broadcasts, self.stack_previous, strict=True)
            ]
        )
        self.raw_sum = {k: torch.zeros_like(p) for k, p in run.params.items()}
        self.steps = 0

    def term_stack(
        self, run: StackRun, features: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor | None:
        terms = [(p * self.correction[k]).flatten(1).sum(1) for k, p in run.params.items()]
        return per_client_sum(terms)

    def after_backward_stack(self, run: StackRun) -> None:
        self._add_raw_gradients(run.params.items())

    def end_stack(
        self, run: StackRun, trained: list[ModelState]
    ) -> list[tuple[Arrays | None, Arrays]]:
        steps = max(1, self.steps)
        means = {k: (v / steps).cpu().numpy().astype(np.float32) for k, v in self.raw_sum.items()}
        out: list[tuple[Arrays | None, Arrays]] = []
        for j, prev in enumerate(self.stack_previous):
            new = {k: v[j].copy() for k, v in means.items()}
            out.append((new, {f"{CHANGE}{k}": new[k] - prev[k] for k in new}))
        return out


class ScaffoldParams(StrategyParams):
    name: Literal["scaffold"] = "scaffold"


@register_strategy
class Scaffold(IndexAveraging[ScaffoldParams]):
    """FedAvg's aggregation plus control variates (the server's half of SCAFFOLD)."""

    name = "scaffold"
    Params = ScaffoldParams
    asynchronous = False  # control variates under staleness: not defined here

    # The server's control variate c lives in `self.memory` as `CONTROL + key` (float64),
    # so checkpoints carry it; a key no round has moved yet is zero.

    def _c(self, state: ModelState) -> dict[str, NDArray[np.float64]]:
        return {
            k: self.memory.get(f"{CONTROL}{k}", np.zeros(v.shape, np.float64))
            for k, v in state.items()
        }

    def client_objective(self) -> ControlVariates:
        return ControlVariates()

    def broadcast(self, state: ModelState) -> Broadcast:
        c = self._c(state)
        return Broadcast(state, {f"{CONTROL}{k}": v.astype(np.float32) for k, v in c.items()})

    def scales(self, global_state: ModelState) -> dict[str, Any]:
        refs = super().scales(global_state)
        refs.update({f"{CHANGE}{k}": v for k, v in self._c(global_state).items()})
        return refs

    def contribution(self, global_state: ModelState, update: ClientUpdate) -> Contribution:
        out = super().contribution(global_state, update)
        out.summed.update({k: v for k, v in update.extras.items() if k.startswith(CHANGE)})
        return out

    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], buffer: Buffer, server_round: int
    ) -> NDArray[np.float32]:
        """FedAvg's centroids; c moves by the accepted share of clients times their mean
        change of c_i (updates that carry no change of a key leave its c alone)."""
        share = len(buffer.accepted()) / max(1, self.num_clients)
        for key in buffer.summed_keys():
            if key.startswith(CHANGE):
                name = f"{CONTROL}{key.removeprefix(CHANGE)}"
                change = buffer.mean(key).astype(np.float64)
                c = self.memory.get(name, np.zeros(change.shape, np.float64))
                self.memory[name] = c + share * change
        return super().reduce_centroids(global_centroids, buffer, server_round)
