"""A client's local steps: drawn up front on the CPU, run without waiting on the host.

A local step is the simulator's unit of cost, so everything a step needs from the host is
prepared before the first one: the batches and kNN partners (from the client's numpy
generator), the loss's sample points and derangements (from its torch generator), in the
order one step at a time would draw them, and copied to the training device once. Where
the client's shard of cached features fits in the device budget it is moved there once
too; the occupancy counts and losses stay on the device and are read once, after the
last step. On a GPU a step then launches its kernels without one blocking copy.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from numpy.typing import NDArray
from torch.optim.adam import adam

from fuss_ray.federation.objective import ClientObjective, LocalRun, StackRun
from fuss_ray.losses import CorrespondenceLoss, Draws, cluster_loss
from fuss_ray.losses.cluster import stacked_cluster_loss
from fuss_ray.losses.sampling import DistinctCells, Pointwise, Sampled
from fuss_ray.models.head import FussModel
from fuss_ray.models.rows import head_codes, head_rows
from fuss_ray.models.stacked import CENTROIDS, StackedParams, stacked_head, trainable

# A client's shard moves to a GPU whole when it takes at most this many bytes, and at most
# a quarter of the process's share of the GPU's memory.
SHARD_ON_DEVICE_BYTES = 1 << 30


def shard_budget(device: torch.device, share: float | None) -> int:
    """Bytes of features a client may keep on `device` for its local steps."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return SHARD_ON_DEVICE_BYTES
    total = torch.cuda.get_device_properties(device).total_memory
    return min(SHARD_ON_DEVICE_BYTES, int(total * (share or 1.0) / 4))


def reuse_freed_memory() -> bool:
    """Serve a step's large CPU tensors from memory the process already holds.

    A step allocates and frees tensors of a few MB (the batch's correlation matrices);
    glibc maps each from the OS afresh and unmaps it when freed, so every step pays page
    faults for memory it just gave back, which on the CPU cost as much as the step's
    elementwise work. Raising glibc's mmap threshold to its maximum (32 MiB) and its trim
    threshold keeps them on the heap, reused from step to step. Returns whether it
    applied (glibc only; elsewhere nothing changes).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1
    return bool(ok and libc.mallopt(m_trim_threshold, 1 << 30) == 1)


@dataclass(frozen=True)
class StepPlan:
    """Every draw of one client's local training."""

    picks: NDArray[np.int64]  # (S, b) positions into the client's shard
    partners: NDArray[np.int64]  # (S, b) their kNN partners' positions
    draws: Draws  # the loss's sample points and derangements, on the CPU


def plan_steps(
    num_images: int,
    knn: NDArray[np.int64],
    batch: int,
    steps: int,
    seed: int,
    loss_fn: CorrespondenceLoss,
) -> StepPlan:
    """Draw all steps' batches and loss draws as the step-by-step loop would."""
    rng = np.random.default_rng(seed)
    picks = np.empty((steps, batch), dtype=np.int64)
    partners = np.empty((steps, batch), dtype=np.int64)
    for i in range(steps):
        picks[i] = rng.choice(num_images, size=batch, replace=False)
        partners[i] = knn[picks[i], rng.integers(knn.shape[1], size=batch)]
    draws = loss_fn.draw(batch, steps, torch.Generator().manual_seed(seed))
    return StepPlan(picks, partners, draws)


class ShardFeatures:
    """A client's feature maps by position in its shard, on the training device.

    On the CPU each batch is read from the (memory-mapped) store as it is needed. On
    another device the whole shard is copied there once when it fits; otherwise each
    batch goes through pinned memory with a non-blocking copy.
    """

    def __init__(
        self,
        gather: Callable[[NDArray[np.int64]], NDArray[np.float32]],
        indices: NDArray[np.int64],
        device: torch.device,
        itemsize: int,
        budget: int = SHARD_ON_DEVICE_BYTES,
    ) -> None:
        self.gather, self.indices, self.device = gather, indices, device
        self.resident: torch.Tensor | None = None
        if device.type != "cpu" and len(indices) * itemsize <= budget:
            self.resident = torch.from_numpy(gather(indices)).to(device)

    def positions(self, plan: NDArray[np.int64]) -> torch.Tensor | None:
        """The plan's positions on the device (once per client), where the shard is there."""
        if self.resident is None:
            return None
        return torch.from_numpy(plan).to(self.device)

    def batch(self, position: NDArray[np.int64], on_device: torch.Tensor | None) -> torch.Tensor:
        if self.resident is not None and on_device is not None:
            return self.resident.index_select(0, on_device)
        host = torch.from_numpy(self.gather(self.indices[position]))
        if self.device.type == "cpu":
            return host
        if torch.cuda.is_available():
            host = host.pin_memory()
        return host.to(self.device, non_blocking=True)


_STEP_DTYPE = {True: torch.float64, False: torch.float32}  # as torch.optim keeps the count


class GroupAdam:
    """`torch.optim.Adam(groups, foreach=True)`, step for step the same bits, without
    the class.

    Every method of `torch.optim.Optimizer` imports `torch._dynamo` on first use: 2-4 s
    of a core in each process that trains, i.e. in every client actor and Tune trial, for
    a few milliseconds of work. This keeps Adam's per-parameter state (the moments, and
    the step count as a CPU tensor) and calls the same functional update per group, which
    is what `Adam.step` does.
    """

    def __init__(self, groups: list[tuple[list[torch.Tensor], float]]) -> None:
        self.groups = groups
        self.state: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for params, _ in self.groups:
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for params, lr in self.groups:
            live = [p for p in params if p.grad is not None]
            for p in live:
                if p not in self.state:
                    self.state[p] = (
                        torch.zeros_like(p, memory_format=torch.preserve_format),
                        torch.zeros_like(p, memory_format=torch.preserve_format),
                        torch.tensor(
                            0.0, dtype=_STEP_DTYPE[torch.get_default_dtype() == torch.float64]
                        ),
                    )
            moments = [self.state[p] for p in live]
            adam(
                live,
                [p.grad for p in live if p.grad is not None],
                [m[0] for m in moments],
                [m[1] for m in moments],
                [],
                [m[2] for m in moments],
                foreach=True,
                amsgrad=False,
                has_complex=False,
                beta1=0.9,
                beta2=0.999,
                lr=lr,
                weight_decay=0.0,
                eps=1e-8,
                maximize=False,
                capturable=False,
                differentiable=False,
                fused=None,
                decoupled_weight_decay=False,
            )


@dataclass(frozen=True)
class StepSettings:
    """The optimiser and loss settings every client of a run shares."""

    lr_head: float
    lr_centroids: float
    cluster_weight: float
    num_centroids: int


def run_steps(
    model: FussModel,
    features: ShardFeatures,
    plan: StepPlan,
    loss_fn: CorrespondenceLoss,
    settings: StepSettings,
    objective: ClientObjective,
    run: LocalRun,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """L_corr + L_cluster (+ the objective's term) for every planned step.

    Returns the centroid occupancy counts and each step's loss, read from the device once.
    """
    device = run.device
    # One Adam over both groups (the update of each parameter is the one two optimisers
    # gave), with its multi-tensor kernels: one call per step instead of one per tensor.
    opt = GroupAdam(
        [
            (list(model.head.parameters()), settings.lr_head),
            ([model.centroids], settings.lr_centroids),
        ]
    )
    draws = plan.draws.to(device)
    picks, partners = features.positions(plan.picks), features.positions(plan.partners)
    use_knn = bool(loss_fn.weights[1])  # kNN partners only when their term counts
    counts = torch.zeros(settings.num_centroids, dtype=torch.int64, device=device)
    losses: list[torch.Tensor] = []
    for i in range(draws.steps):
        x = features.batch(plan.picks[i], None if picks is None else picks[i])
        codes = head_codes(model.head, x)
        codes_k: Sampled = codes
        xk = x
        if use_knn:
            xk = features.batch(plan.partners[i], None if partners is None else partners[i])
            codes_k = DistinctCells(partial(head_rows, model.head), xk)
        corr = loss_fn(x, codes, xk, codes_k, draws.step(i))
        clus, assign = cluster_loss(codes, model.centroids)
        loss = corr + settings.cluster_weight * clus
        extra = objective.term(run, x, codes)
        if extra is not None:
            loss = loss + extra
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        objective.after_backward(run)
        opt.step()
        counts += torch.bincount(assign.reshape(-1), minlength=settings.num_centroids)
        losses.append(loss.detach())
    per_step = torch.stack(losses).cpu().numpy().astype(np.float64) if losses else np.zeros(0)
    return counts.cpu().numpy(), per_step


def _partner_codes(
    head: Callable[[torch.Tensor], torch.Tensor], xk: torch.Tensor, taps_per_set: int
) -> torch.Tensor | Pointwise:
    """A partner is sampled at one set of points: where their four taps cover fewer cells
    than its map has, the head runs on those cells alone."""
    cells = xk.shape[2] * xk.shape[3]
    return Pointwise(head, xk) if 4 * taps_per_set < cells else head(xk)


@dataclass(frozen=True)
class Stack:
    """What G clients' stacked local steps read: their shards, plans and dropout masks."""

    features: list[ShardFeatures]
    plans: list[StepPlan]
    masks: torch.Tensor | None  # (S, calls, G * B, D') on the device, or None (no dropout)

    def batch(self, i: int, partners: bool, on_device: list[torch.Tensor | None]) -> torch.Tensor:
        """Step i's images (or their kNN partners) of every client, image-major."""
        parts = []
        for f, plan, pos in zip(self.features, self.plans, on_device, strict=True):
            where = plan.partners if partners else plan.picks
            parts.append(f.batch(where[i], None if pos is None else pos[i]))
        return torch.cat(parts)


def run_stacked_steps(
    params: StackedParams,
    stack: Stack,
    loss_fn: CorrespondenceLoss,
    settings: StepSettings,
    objective: ClientObjective,
    run: StackRun,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """`run_steps` for G clients as one computation (`federation.client_batch`).

    Returns each client's occupancy counts (G, C) and per-step losses (G, S), read from the
    device once. Client j's numbers depend on its own slice alone, so they are the same
    bits in a stack of any size.
    """
    g, device = len(stack.plans), run.device
    head, centroids = trainable(params)
    opt = GroupAdam([(head, settings.lr_head), (centroids, settings.lr_centroids)])
    draws = Draws.stack([p.draws for p in stack.plans]).to(device)
    picks = [f.positions(p.picks) for f, p in zip(stack.features, stack.plans, strict=True)]
    partners = [f.positions(p.partners) for f, p in zip(stack.features, stack.plans, strict=True)]
    use_knn = bool(loss_fn.weights[1])
    taps_per_set = loss_fn.samples * loss_fn.samples
    c = settings.num_centroids
    offsets = torch.arange(g, device=device).view(g, 1) * c
    counts = torch.zeros(g * c, dtype=torch.int64, device=device)
    losses: list[torch.Tensor] = []
    for i in range(draws.steps):
        masks = (None, None) if stack.masks is None else (stack.masks[i, 0], stack.masks[i, -1])
        x = stack.batch(i, False, picks)
        codes = stacked_head(params, x, masks[0])
        codes_k: Sampled = codes
        xk = x
        if use_knn:
            xk = stack.batch(i, True, partners)
            codes_k = _partner_codes(
                partial(stacked_head, params, masks=masks[1]), xk, taps_per_set
            )
        corr = loss_fn.per_client(x, codes, xk, codes_k, draws.step(i), g)
        clus, assign = stacked_cluster_loss(codes, params[CENTROIDS])
        loss = corr + settings.cluster_weight * clus
        extra = objective.term_stack(run, _by_client(x, g), _by_client(codes, g))
        if extra is not None:
            loss = loss + extra
        opt.zero_grad()
        loss.sum().backward()  # type: ignore[no-untyped-call]
        objective.after_backward_stack(run)
        opt.step()
        counts += torch.bincount((assign + offsets).reshape(-1), minlength=g * c)
        losses.append(loss.detach())
    per_step = torch.stack(losses, 1).cpu().numpy().astype(np.float64) if losses else None
    return counts.view(g, c).cpu().numpy(), np.zeros((g, 0)) if per_step is None else per_step


def _by_client(images: torch.Tensor, clients: int) -> torch.Tensor:
    """(G * B, ...) -> (G, B, ...), a view."""
    return images.view(clients, images.shape[0] // clients, *images.shape[1:])
