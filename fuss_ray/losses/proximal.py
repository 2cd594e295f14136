"""FedProx's proximal term: keeps a client's head near the global one under skew."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def proximal_term(
    params: Iterable[torch.Tensor], anchors: Iterable[torch.Tensor], mu: float
) -> torch.Tensor:
    """(mu / 2) * sum ||theta - theta_global||^2."""
    terms = [(p - a.detach()).pow(2).sum() for p, a in zip(params, anchors, strict=True)]
    return 0.5 * mu * torch.stack(terms).sum()
