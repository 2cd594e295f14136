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


def stacked_cluster_loss(
    codes: torch.Tensor, centroids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`cluster_loss` of G clients stacked image-major, codes (G * B, D, h, w) against
    centroids (G, C, D): each client's loss (G,) and assignments (G, B * h * w)."""
    g, n, d = centroids.shape[0], codes.shape[0], codes.shape[1]
    code = F.normalize(codes.detach(), dim=1).view(g, n // g, d, -1)
    cents = F.normalize(centroids, dim=2)
    inner = torch.matmul(cents.unsqueeze(1), code)  # (G, B, C, hw)
    best, assign = inner.max(dim=2)
    return -best.reshape(g, -1).mean(dim=1), assign.reshape(g, -1)
