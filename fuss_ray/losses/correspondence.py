"""STEGO correspondence distillation: codes should correlate where frozen features do.

For a pair of images the loss compares the cosine correlation of sampled feature vectors
(F, no gradient, centred per query) with that of the codes (S), and pushes S up where F
exceeds the shift b and down where it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sample_at(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of (B, D, h, w) maps at (B, P, 2) coordinates in [-1, 1] -> (B, D, P)."""
    grid = coords.unsqueeze(1)  # (B, 1, P, 2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(2)


def correspondence_term(
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    codes_a: torch.Tensor,
    codes_b: torch.Tensor,
    shift: float,
) -> torch.Tensor:
    """L(x, y, b) on sampled vectors, each (B, D, P): -mean[clamp(S, 0) * (F - b)]."""
    with torch.no_grad():
        fa, fb = F.normalize(feats_a, dim=1), F.normalize(feats_b, dim=1)
        corr_f = torch.einsum("bdp,bdq->bpq", fa, fb)
        global_mean = corr_f.mean()
        corr_f = corr_f - corr_f.mean(dim=2, keepdim=True) + global_mean
    sa, sb = F.normalize(codes_a, dim=1), F.normalize(codes_b, dim=1)
    corr_s = torch.einsum("bdp,bdq->bpq", sa, sb)
    return -(corr_s.clamp(min=0.0) * (corr_f - shift)).mean()


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation with no fixed point (a random cycle), so no image pairs itself."""
    order = torch.randperm(n, generator=generator)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


@dataclass(frozen=True)
class CorrespondenceLoss:
    """w_self L(x,x) + w_knn L(x,x_knn) + w_rand mean_perm L(x, x_perm)."""

    weights: tuple[float, float, float]
    shifts: tuple[float, float, float]
    samples: int = 11
    permutations: int = 5

    def __call__(
        self,
        feats: torch.Tensor,
        codes: torch.Tensor,
        knn_feats: torch.Tensor,
        knn_codes: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The weighted sum of the three terms (a scalar tensor; nothing leaves the device)."""
        self_term, knn_term, rand_term = self.terms(feats, codes, knn_feats, knn_codes, generator)
        w = self.weights
        return w[0] * self_term + w[1] * knn_term + w[2] * rand_term

    def terms(
        self,
        feats: torch.Tensor,
        codes: torch.Tensor,
        knn_feats: torch.Tensor,
        knn_codes: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L(x, x), L(x, x_knn) and the mean of L(x, x_perm), unweighted."""
        b = feats.shape[0]
        p = self.samples * self.samples
        # Draws come from a CPU generator on every device, so a client's random stream
        # does not depend on where it trains.
        c1 = (torch.rand(b, p, 2, generator=generator) * 2 - 1).to(feats.device)
        c2 = (torch.rand(b, p, 2, generator=generator) * 2 - 1).to(feats.device)
        f1, s1 = sample_at(feats, c1), sample_at(codes, c1)
        f2, s2 = sample_at(feats, c2), sample_at(codes, c2)
        zero = torch.zeros((), dtype=codes.dtype, device=codes.device)
        w = self.weights
        # A term with weight 0 is not computed (the random draws above are made anyway,
        # so results do not depend on which terms are switched off).
        self_term = correspondence_term(f1, f2, s1, s2, self.shifts[0]) if w[0] else zero
        if w[1]:
            fk, sk = sample_at(knn_feats, c2), sample_at(knn_codes, c2)
            knn_term = correspondence_term(f1, fk, s1, sk, self.shifts[1])
        else:
            knn_term = zero
        if b > 1:
            rand_terms = []
            for _ in range(self.permutations):
                perm = derangement(b, generator).to(feats.device)
                rand_terms.append(correspondence_term(f1, f2[perm], s1, s2[perm], self.shifts[2]))
            rand_term = torch.stack(rand_terms).mean()
        else:
            rand_term = zero
        return self_term, knn_term, rand_term
