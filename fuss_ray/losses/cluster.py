"""The cluster loss: mini-batch spherical k-means that moves only the centroids."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cluster_loss(codes: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-mean_p max_c cos(code_p, mu_c) on detached codes; also the hard assignments.

    Detaching keeps the head trained by correspondence alone, as in STEGO and FUSS.
    """
    b, d, h, w = codes.shape
    # Pixels as rows (a view of channels-last codes). A pixel's best centroid under the
    # cosine is the one of largest dot product with the unit centroids (its own norm is
    # one positive factor), so the codes are divided by their norms after the product,
    # once per pixel, instead of normalised first.
    rows = codes.detach().permute(0, 2, 3, 1).reshape(-1, d)
    cents = F.normalize(centroids, dim=1)
    best, assign = (rows @ cents.t()).max(dim=1)
    cosine = best / torch.linalg.vector_norm(rows, dim=1).clamp_min(1e-12)
    return -cosine.mean(), assign.view(b, h, w)


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
