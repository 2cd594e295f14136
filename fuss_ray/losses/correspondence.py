"""STEGO correspondence distillation: codes should correlate where frozen features do.

For a pair of images the loss compares the cosine correlation of sampled feature vectors
(F, no gradient, centred per query) with that of the codes (S), and pushes S up where F
exceeds the shift b and down where it does not. `correspondence_term` is that definition
for one pair of sampled sets, as the paper writes it.

`CorrespondenceLoss` computes the same terms for a whole step at once, because a client
step is the simulator's unit of cost. Every sampled set is normalised once. The self
pairing (x, x) and every random pairing (x, x_perm) are blocks of one matrix: the
correlations of all first-set points of the batch with all second-set points (one
product for the features, one for the codes). A pairing's centring subtracts block row
means; its global mean, shift and weight are constants per block. So the whole self +
random loss is -sum(relu(S) * W) over that matrix, with W = A * (F - row means) + C and
A, C two B x B tables built from the derangements (a block used by two derangements
counts twice; a block used by none weighs 0). The kNN pairing is one more batched
product. It equals the per-term form up to float32 rounding (tests/losses checks it
against the form this project used first, tests/reference_step.py).

`CorrespondenceLoss.per_client` is the same loss for G clients trained as one stack
(`federation.client_batch`): their images side by side, (G * B, ...), one loss per
client. Each per-image step runs over all G * B images; each pairwise matrix gains a
leading client dimension, so client j's loss and gradients depend on its slice alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fuss_ray.losses.sampling import Sampled, gather_taps, sample, taps


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
class Draws:
    """The random draws of a client's local steps, made on its CPU generator.

    They are drawn for all steps at once, in the order one step at a time would draw them
    (a step's two coordinate sets, then its derangements), and moved to the training
    device in one copy: no step waits on a host-to-device transfer of its coordinates.
    """

    coords: torch.Tensor  # (S, B, 2P, 2): each step's first set of points, then its second
    perms: torch.Tensor  # (S, R, B) int64 derangements (R = 0 for a batch of one image)
    # Stacked (`stack`): coords (S, G * B, 2P, 2), clients side by side; perms (S, G, R, B).

    @property
    def steps(self) -> int:
        return int(self.coords.shape[0])

    def to(self, device: torch.device) -> Draws:
        return Draws(self.coords.to(device), self.perms.to(device))

    def step(self, i: int) -> Draws:
        """Step i's draws alone (a leading dimension of one)."""
        return Draws(self.coords[i : i + 1], self.perms[i : i + 1])

    @staticmethod
    def stack(draws: list[Draws]) -> Draws:
        """G clients' draws (same steps and batch) as one stack's."""
        return Draws(
            torch.cat([d.coords for d in draws], dim=1), torch.stack([d.perms for d in draws], 1)
        )


@dataclass(frozen=True)
class _Blocks:
    """One step's correlations, ready to be weighted."""

    lead: tuple[int, ...]  # () for one client; (G,) for a stack, before every shape below
    batch: int
    points: int
    codes1: torch.Tensor  # (B*P, D) unit codes at the first set of points, image-major
    codes2: torch.Tensor  # (B*P, D) and at the second
    feats: torch.Tensor  # (B, P, B, P) F of the same points (no gradient)
    row_means: torch.Tensor  # (B, P, B, 1) its block row means
    block_means: torch.Tensor  # (B, B) mean F of each block
    perms: torch.Tensor  # (R, B) the random pairings
    knn_codes: torch.Tensor | None  # (B, P, D) unit codes of each image's kNN partner
    knn_centred: torch.Tensor | None  # (B, P, P) F minus row means
    knn_mean: torch.Tensor | None  # () global mean F of the kNN pairing


@dataclass(frozen=True)
class CorrespondenceLoss:
    """w_self L(x,x) + w_knn L(x,x_knn) + w_rand mean_perm L(x, x_perm)."""

    weights: tuple[float, float, float]
    shifts: tuple[float, float, float]
    samples: int = 11
    permutations: int = 5

    def __post_init__(self) -> None:
        if len(self.weights) != 3 or len(self.shifts) != 3:
            raise ValueError("weights and shifts are (self, knn, rand) triples")
        if self.samples < 1 or self.permutations < 1:
            raise ValueError("samples and permutations must be at least 1")

    def draw(self, batch: int, steps: int, generator: torch.Generator) -> Draws:
        """Every step's coordinates and derangements, on the CPU."""
        p = self.samples * self.samples
        coords, perms = [], []
        for _ in range(steps):
            c1 = torch.rand(batch, p, 2, generator=generator) * 2 - 1
            c2 = torch.rand(batch, p, 2, generator=generator) * 2 - 1
            coords.append(torch.cat((c1, c2), dim=1))
            rounds = self.permutations if batch > 1 else 0
            perms.append(
                torch.stack([derangement(batch, generator) for _ in range(rounds)])
                if rounds
                else torch.empty(0, batch, dtype=torch.long)
            )
        return Draws(torch.stack(coords), torch.stack(perms))

    def __call__(
        self,
        feats: torch.Tensor,
        codes: torch.Tensor,
        knn_feats: torch.Tensor,
        knn_codes: Sampled,
        draws: Draws | torch.Generator,
    ) -> torch.Tensor:
        """The weighted sum of the three terms (a scalar tensor; nothing leaves the device).

        `draws` is one step's `Draws` (already on the device), or a generator to draw them
        from now. A term of weight 0 is not computed.
        """
        step = self._step_draws(draws, feats)
        blocks = self._blocks(feats, codes, knn_feats, knn_codes, step, bool(self.weights[1]))
        return _weighted(blocks, self.weights, self.shifts)

    def per_client(
        self,
        feats: torch.Tensor,
        codes: torch.Tensor,
        knn_feats: torch.Tensor,
        knn_codes: Sampled,
        draws: Draws,
        clients: int,
    ) -> torch.Tensor:
        """The loss of each of `clients` clients stacked image-major ((G * B, ...) maps,
        one step's stacked `Draws`): (G,)."""
        use_knn = bool(self.weights[1])
        blocks = self._blocks(feats, codes, knn_feats, knn_codes, draws, use_knn, clients)
        return _weighted(blocks, self.weights, self.shifts)

    def terms(
        self,
        feats: torch.Tensor,
        codes: torch.Tensor,
        knn_feats: torch.Tensor,
        knn_codes: Sampled,
        draws: Draws | torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L(x, x), L(x, x_knn) and the mean of L(x, x_perm), unweighted (a self or kNN
        term of weight 0 is not computed and reads 0, as does the random term of a single
        image)."""
        step = self._step_draws(draws, feats)
        blocks = self._blocks(feats, codes, knn_feats, knn_codes, step, bool(self.weights[1]))
        one_hot = ((float(bool(self.weights[0])), 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
        out = [_weighted(blocks, w, self.shifts) for w in one_hot]
        return out[0], out[1], out[2]

    def _step_draws(self, draws: Draws | torch.Generator, like: torch.Tensor) -> Draws:
        if isinstance(draws, torch.Generator):
            return self.draw(like.shape[0], 1, draws).to(like.device)
        if draws.steps != 1:
            raise ValueError(f"one step's draws expected, got {draws.steps} (use Draws.step)")
        return draws

    def _blocks(
        self,
        feats: torch.Tensor,
        codes: torch.Tensor,
        knn_feats: torch.Tensor,
        knn_codes: Sampled,
        step: Draws,
        use_knn: bool,
        clients: int = 0,
    ) -> _Blocks:
        """The blocks of one client (`clients` = 0), or of a stack of that many."""
        n, _, h, w = feats.shape
        lead = (clients,) if clients else ()
        b = n // max(1, clients)
        p = self.samples * self.samples
        coords = step.coords[0]
        tap = taps(coords, h, w)
        with torch.no_grad():  # grid_sample's forward is deterministic; no gradient here
            f1, f2 = _unit_rows(sample_at(feats, coords), 2, lead)  # (B*P, D) each
        s1, s2 = _unit_rows(gather_taps(codes, tap), 2, lead)
        with torch.no_grad():
            corr_f = (f1 @ f2.transpose(-1, -2)).view(*lead, b, p, b, p)
            # F is bilinear in the two sets: a block row's mean is the point's product
            # with the partner image's mean vector, so no pass over F is needed for it.
            means2 = f2.view(*lead, b, p, -1).mean(dim=-2)  # (B, D)
            row_means = (f1 @ means2.transpose(-1, -2)).view(*lead, b, p, b, 1)
            block_means = row_means.mean(dim=-3).view(*lead, b, b)
        knn_s = knn_c = knn_m = None
        if use_knn:
            second = tap[p:]
            with torch.no_grad():
                (fk,) = _unit_rows(sample_at(knn_feats, coords[:, p:]), 1)
                corr_k = torch.bmm(f1.reshape(n, p, -1), fk.view(n, p, -1).transpose(1, 2))
                knn_m = corr_k.view(*lead, -1).mean(-1) if lead else corr_k.mean()
                knn_c = corr_k.sub_(corr_k.mean(dim=2, keepdim=True)).view(*lead, b, p, p)
            (sk,) = _unit_rows(sample(knn_codes, second), 1)
            knn_s = sk.view(*lead, b, p, -1)
        perms = step.perms[0] if b > 1 else step.perms[0][..., :0, :]
        return _Blocks(
            lead, b, p, s1, s2, corr_f, row_means, block_means, perms, knn_s, knn_c, knn_m
        )


def _unit_rows(
    samples: torch.Tensor, n: int, lead: tuple[int, ...] = ()
) -> tuple[torch.Tensor, ...]:
    """(B, D, n*P) samples of n point sets as n unit-norm (B*P, D) row blocks, image-major
    (one copy into rows, then norms along contiguous memory); (G, B*P, D) for a stack."""
    b, d, total = samples.shape
    rows = samples.view(b, d, n, total // n).permute(2, 0, 3, 1).reshape(n, *lead, -1, d)
    return tuple(F.normalize(rows, dim=-1).unbind(0))


def _weighted(
    blocks: _Blocks, weights: tuple[float, float, float], shifts: tuple[float, float, float]
) -> torch.Tensor:
    """-sum(relu(S) * W) of the blocks for the given term weights: the loss."""
    b, p, lead = blocks.batch, blocks.points, blocks.lead
    per_pair = float(b * p * p)
    zero = torch.zeros(lead, dtype=blocks.codes1.dtype, device=blocks.codes1.device)
    total = zero
    r = blocks.perms.shape[-2]
    if weights[0] or (weights[2] and r):
        with torch.no_grad():
            eye = torch.eye(b, dtype=blocks.codes1.dtype, device=blocks.codes1.device)
            # A[i, j]: the weight of block (i, j); C[i, j]: its constant (global mean - shift).
            a = eye * (weights[0] / per_pair)
            diag = blocks.block_means.diagonal(dim1=-2, dim2=-1).mean(-1)  # () or (G,)
            c = eye * (weights[0] / per_pair) * (diag[..., None, None] - shifts[0])
            if weights[2] and r:
                pick = F.one_hot(blocks.perms, b).to(blocks.codes1.dtype)  # (R, B, B)
                paired = blocks.block_means.unsqueeze(-3).expand(*lead, r, b, b)
                means = paired.gather(-1, blocks.perms.unsqueeze(-1)).squeeze(-1).mean(-1)
                coef = weights[2] / (r * per_pair)
                a = a + pick.sum(dim=-3) * coef
                c = c + (pick * (coef * (means - shifts[2]))[..., None, None]).sum(dim=-3)
            a4 = a.view(*a.shape[:-2], b, 1, b, 1)
            # W = (F - row means) * A + C, in two passes over the matrix.
            weight = (blocks.feats * a4).add_(
                c.view(*c.shape[:-2], b, 1, b, 1) - blocks.row_means * a4
            )
        pairs = weight.view(*lead, b * p, b * p)
        total = total + gram_hinge(blocks.codes1, blocks.codes2, pairs, bool(lead))
    if weights[1] and blocks.knn_codes is not None:
        assert blocks.knn_centred is not None and blocks.knn_mean is not None
        with torch.no_grad():
            coef = weights[1] / per_pair
            shift = blocks.knn_mean[..., None, None, None] - shifts[1]
            weight_k = (blocks.knn_centred + shift) * coef
        codes1 = blocks.codes1.view(*lead, b, p, -1)
        total = total + gram_hinge(codes1, blocks.knn_codes, weight_k, bool(lead))
    return total


class _GramHinge(torch.autograd.Function):
    """-sum(relu(a @ b^T) * w) for rows a, b ((n, d) and (m, d), or batched) and a constant
    weight map w.

    Written out because the loss is elementwise work on an (n, m) matrix between two
    products. Here one pass makes the masked weight M = w where S > 0, else 0 (relu's own
    backward kernel, no boolean tensor); the value is -sum(S * M), which is
    -sum(relu(S) * w) product for product; the backward pass is the two products with M
    (the scalar gradient scales their small outputs). With `per_client` the leading
    dimension is the client's: one value per client.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        a: torch.Tensor,
        b: torch.Tensor,
        w: torch.Tensor,
        per_client: bool,
    ) -> torch.Tensor:
        corr = torch.matmul(a, b.transpose(-1, -2))
        masked = torch.ops.aten.threshold_backward(w, corr, 0.0)  # W where S > 0, else 0
        if per_client:  # each client's row reduced alone (a batched product of one
            # client takes another kernel than of several, and other bits)
            g = corr.shape[0]
            value = -corr.view(g, -1).mul(masked.view(g, -1)).sum(1)
        else:
            value = -torch.dot(corr.reshape(-1), masked.reshape(-1))
        ctx.save_for_backward(a, b, masked)
        return value

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        a, b, masked = ctx.saved_tensors  # type: ignore[attr-defined]
        need = ctx.needs_input_grad  # type: ignore[attr-defined]
        scale = -grad.view(*grad.shape, *([1] * (a.dim() - grad.dim())))
        grad_a = torch.matmul(masked, b).mul_(scale) if need[0] else None
        grad_b = torch.matmul(masked.transpose(-1, -2), a).mul_(scale) if need[1] else None
        return grad_a, grad_b, None, None


def gram_hinge(
    a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, per_client: bool = False
) -> torch.Tensor:
    """-sum(relu(a @ b^T) * w), differentiable in a and b (w is a constant). `per_client`:
    one sum per slice of the leading (client) dimension."""
    out: torch.Tensor = _GramHinge.apply(a, b, w, per_client)
    return out
