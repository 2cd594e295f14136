"""The client step as fuss-ray first computed it, kept to check and time the fast one.

`ReferenceLoss` is the correspondence loss term by term (every pairing normalises its
sampled sets and takes its own product, `F.grid_sample` samples, draws are made each
step) and `reference_steps` the local-step loop that called it (a feature read and its
copy, the occupancy counts and the loss read back, every step). tests/losses checks the
fast loss against it; tools/bench_step.py times both in one run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from fuss_ray.losses.correspondence import correspondence_term, derangement, sample_at
from fuss_ray.models.head import FussModel


def cluster_loss(codes: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cluster loss as it was computed then: codes normalised, then every cosine."""
    code = F.normalize(codes.detach(), dim=1)
    cents = F.normalize(centroids, dim=1)
    inner = torch.einsum("bdhw,cd->bchw", code, cents)
    best, assign = inner.max(dim=1)
    return -best.mean(), assign


@dataclass(frozen=True)
class ReferenceLoss:
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


def reference_steps(
    model: FussModel,
    gather: object,
    indices: NDArray[np.int64],
    knn: NDArray[np.int64],
    loss_fn: ReferenceLoss,
    *,
    steps: int,
    batch: int,
    seed: int,
    lrs: tuple[float, float],
    cluster_weight: float,
    num_centroids: int,
    device: torch.device,
) -> tuple[NDArray[np.int64], float]:
    """The local-step loop of ClientHost._train_one before the step plan (no objective)."""
    assert callable(gather)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(indices)
    bsz = min(batch, n)
    opt_head = torch.optim.Adam(model.head.parameters(), lr=lrs[0])
    opt_cent = torch.optim.Adam([model.centroids], lr=lrs[1])
    counts = np.zeros(num_centroids, dtype=np.int64)
    losses: list[float] = []
    for _ in range(steps):
        pick = rng.choice(n, size=bsz, replace=False)
        partner = knn[pick, rng.integers(knn.shape[1], size=bsz)]
        x = torch.from_numpy(gather(indices[pick])).to(device)
        codes = model.head(x)
        if loss_fn.weights[1]:
            xk = torch.from_numpy(gather(indices[partner])).to(device)
            codes_k = model.head(xk)
        else:
            xk, codes_k = x, codes
        corr = loss_fn(x, codes, xk, codes_k, gen)
        clus, assign = cluster_loss(codes, model.centroids)
        loss = corr + cluster_weight * clus
        opt_head.zero_grad(set_to_none=True)
        opt_cent.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt_head.step()
        opt_cent.step()
        counts += np.bincount(assign.reshape(-1).cpu().numpy(), minlength=num_centroids)
        losses.append(float(loss.detach()))
    return counts, float(np.mean(losses))
