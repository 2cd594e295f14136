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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from fuss_ray.federation.types import Arrays, Broadcast, ModelState
from fuss_ray.models.head import FussModel


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
