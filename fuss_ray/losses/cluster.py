"""The cluster loss: mini-batch spherical k-means that moves only the centroids."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cluster_loss(codes: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-mean_p max_c cos(code_p, mu_c) on detached codes; also the hard assignments.

    Detaching keeps the head trained by correspondence alone, as in STEGO and FUSS.
    """
    code = F.normalize(codes.detach(), dim=1)
    cents = F.normalize(centroids, dim=1)
    inner = torch.einsum("bdhw,cd->bchw", code, cents)
    best, assign = inner.max(dim=1)
    return -best.mean(), assign
