"""The hook by which a strategy shapes a client's local training.

Every client minimises L_corr + L_cluster (STEGO's losses, as FUSS does). A strategy may
add to that: a term in the loss (FedProx's proximal term, MOON's contrastive term, a
SCAFFOLD-style correction), a different starting point (local-only training starts from
the client's own model), and state a client keeps from one participation to the next
(MOON's previous model, control variates). All of it lives in the strategy's
`ClientObjective`; the client loop calls the hooks below and names no strategy.

What a client keeps is returned by `end` and handed back to `start_state` and `begin` the
next time the client trains; the host keeps it in memory, writes it into every checkpoint
and restores it after a crash or a resume, so an objective never deals with either. Its
size must be declared in `kept_states` (in model states per client), which the memory
estimate counts before a run starts.

Every hook has a stacked form for `federation.client_batch` > 1, where a host trains G
clients as one computation: the same hook over tensors with a leading client dimension
(`StackRun`: the G clients' parameters stacked, features (G, B, D', h, w), codes
(G, B, D, h, w)), returning one loss term per client, (G,). The per-client form is the
simple case and stays the one the default path runs. An objective that overrides a
per-client hook without its stacked form cannot be stacked (`stacks()`), and its clients
train one at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, final

import torch

from fuss_ray.federation.types import Arrays, Broadcast, ModelState
from fuss_ray.models.head import FussModel
from fuss_ray.models.stacked import StackedParams


@dataclass
class LocalRun:
    """One client's local training, as its strategy's objective sees it."""

    client_id: int
    model: FussModel  # being trained, on `device`, loaded with `start_state`'s result
    broadcast: Broadcast  # this round's global state and its strategy's extras
    kept: Arrays | None  # what `end` returned last time for this client (None: never)
    device: torch.device
    local_steps: int
    make_model: Callable[[], FussModel]  # a model of the same shape on `device` (a reference)


class ClientObjective:
    """No addition: plain L_corr + L_cluster from the global state (FedAvg, FedCC, OT)."""

    kept_states: ClassVar[int] = 0  # model states kept per client between participations

    def start_state(self, broadcast: Broadcast, kept: Arrays | None) -> ModelState:
        """Where local training starts."""
        return broadcast.state

    def begin(self, run: LocalRun) -> None:
        """Before the first step (set up anchors, reference models)."""

    def term(
        self, run: LocalRun, features: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor | None:
        """An extra loss term for this step's batch, or None."""
        return None

    def after_backward(self, run: LocalRun) -> None:
        """After each backward pass, before the optimiser steps (gradients are set)."""

    def end(self, run: LocalRun, trained: ModelState) -> tuple[Arrays | None, Arrays]:
        """After the last step: what the client keeps (None: nothing) and what it sends
        besides its state (`ClientUpdate.extras`)."""
        return None, {}

    # The stacked forms: the same hooks for G clients trained as one computation.

    def begin_stack(self, run: StackRun) -> None:
        """`begin` for the stack."""

    def term_stack(
        self, run: StackRun, features: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor | None:
        """`term` for the stack: (G,) terms, one per client (client j's depends on
        slice j alone), or None."""
        return None

    def after_backward_stack(self, run: StackRun) -> None:
        """`after_backward` for the stack (`run.params[k].grad` is (G, ...))."""

    def end_stack(
        self, run: StackRun, trained: list[ModelState]
    ) -> list[tuple[Arrays | None, Arrays]]:
        """`end` for each client of the stack, in `run.client_ids` order."""
        return [(None, {}) for _ in trained]

    @final
    @classmethod
    def stacks(cls) -> bool:
        """Whether every per-client hook this objective changes has its stacked form."""
        for one, many in _STACKED.items():
            if _overrides(cls, one) and not _overrides(cls, many):
                return False
        return True

    @final
    @classmethod
    def stack_size(cls, requested: int) -> int:
        """The clients a host trains as one stack when `federation.client_batch` asks for
        `requested`: 1 (one at a time) where this objective cannot be stacked."""
        return requested if cls.stacks() else 1


_STACKED = {
    "begin": "begin_stack",
    "term": "term_stack",
    "after_backward": "after_backward_stack",
    "end": "end_stack",
}


def per_client_sum(terms: list[torch.Tensor]) -> torch.Tensor:
    """(G,) terms added one after the other.

    Not `torch.stack(terms).sum(0)`: a reduction across the stack's columns picks its
    summation order by their number, so client j's sum would change with G. Sums within
    a client's own slice (`t.flatten(1).sum(1)`) are safe: each row is reduced alone.
    """
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(ClientObjective, name)


@dataclass
class StackRun:
    """G clients' local training as one stacked computation, as their objective sees it."""

    client_ids: list[int]
    params: StackedParams  # being trained: (G, *shape) by state name, on `device`
    broadcasts: list[Broadcast]  # each client's view of this round's broadcast
    kept: list[Arrays | None]  # what `end_stack` returned last time, per client
    device: torch.device
    local_steps: int
    # codes (G, B, D, h, w) of features (G, B, D', h, w) under other stacked parameters
    # (a reference model: no dropout, no gradient)
    head: Callable[[StackedParams, torch.Tensor], torch.Tensor]
    # stacks numpy states (one per client) into parameters of the same form, on `device`
    stack: Callable[[list[Arrays]], StackedParams]

    def head_params(self) -> StackedParams:
        """The trained head's parameters (the centroids left out)."""
        return {k: v for k, v in self.params.items() if k.startswith("head.")}
