"""Host-side reduction of client updates: exact, order-free, and O(hosts) to ship.

A round with 1000 clients should not send 1000 model states through the driver. Each host
(one Ray actor, or the sequential executor's single host) screens its clients' updates and
folds the accepted ones into one `Reduced`: weighted sums of the arrays the strategy
averages, plus the few small arrays it needs client by client (FedCC's centroids).

The sums are kept in int64 fixed point on a grid fixed by the server for the round, so
adding them is exact integer arithmetic: associative and commutative. Whatever the packing
of clients into hosts and the order in which hosts answer, the merged sums are the same
bits, which is what lets the Ray executor match the sequential one bit for bit. The grid
is chosen from the global state so that no sum can overflow: an update with any value
beyond 1024 times the global's largest magnitude (at least 1024) is rejected as diverged
('range'), like a NaN one. Quantisation error is below 2^-38 of the bound per term, far
under float32 resolution for any value that matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.types import CENTROIDS, Arrays, ClientUpdate, ModelState


class Summation(Protocol):
    """What reduction asks of a round's update rule: which arrays each client adds to the
    sums, which it sends one by one, and the scale of every summed array (see
    `server_update.ServerUpdate`)."""

    def summand_references(self, global_state: ModelState) -> Arrays: ...

    def client_arrays(
        self, update: ClientUpdate, global_state: ModelState
    ) -> tuple[Arrays, Arrays]: ...


GROWTH = 2.0**10
_HEADROOM_BITS = 61  # of int64's 63: room for rounding and a few hosts' worth of slack


def value_bound(reference: NDArray[Any]) -> float:
    """The largest magnitude an update may hold for an array shaped like `reference`."""
    top = float(np.max(np.abs(reference))) if reference.size else 0.0
    return max(top, 1.0) * GROWTH


def grid_shifts(arrays: dict[str, NDArray[Any]], total_weight: int) -> dict[str, int]:
    """Per array key, S such that sum_i round(w_i v_i 2^S) cannot overflow int64."""
    return {
        k: _HEADROOM_BITS - math.ceil(math.log2(value_bound(v) * max(1, total_weight)))
        for k, v in arrays.items()
    }


@dataclass
class ClientRecord:
    """What the server learns about each trained client besides its arrays."""

    client_id: int
    num_samples: int
    loss: float
    rejected: str | None = None
    # How its centroids line up with the global ones it started from (see `alignment`).
    aligned: bool | None = None
    gap_index: float | None = None
    gap_matched: float | None = None


def alignment(client: NDArray[Any], global_: NDArray[Any]) -> tuple[bool, float, float]:
    """Whether a client's centroids are still index-aligned with the global ones.

    The best one-to-one matching of client centroids to global centroids (squared
    Euclidean cost; what exact optimal transport with uniform masses finds) is the
    identity when centroid k still plays the role of global centroid k. Also returned:
    the mean distance from client centroid k to global centroid k (what index-wise
    averaging pairs) and to its matched global centroid (what matching pairs).
    """
    from scipy.optimize import linear_sum_assignment

    c, g = client.astype(np.float64), global_.astype(np.float64)
    cost = ((c[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    index_gap = float(np.sqrt(np.diag(cost)).mean())
    matched_gap = float(np.sqrt(cost[rows, cols]).mean())
    return bool(np.array_equal(rows, cols)), index_gap, matched_gap


@dataclass
class Reduced:
    """One host's (or, merged, the whole round's) contribution."""

    weight: int = 0  # sum of accepted clients' samples
    sums: dict[str, NDArray[np.int64]] = field(default_factory=dict)
    shifts: dict[str, int] = field(default_factory=dict)
    per_client: dict[int, Arrays] = field(default_factory=dict)  # arrays kept one by one
    records: list[ClientRecord] = field(default_factory=list)

    def add(self, key: str, value: NDArray[Any], weight: int) -> None:
        scaled = np.rint(value.astype(np.float64) * weight * 2.0 ** self.shifts[key])
        term = scaled.astype(np.int64)
        if key in self.sums:
            self.sums[key] += term
        else:
            self.sums[key] = term

    def merge(self, other: Reduced) -> Reduced:
        """Exact and order-free: integer sums, and per-client arrays keyed by client."""
        out = Reduced(self.weight + other.weight, dict(self.sums), dict(self.shifts))
        out.shifts.update(other.shifts)
        for k, v in other.sums.items():
            out.sums[k] = out.sums[k] + v if k in out.sums else v.copy()
        out.per_client = {**self.per_client, **other.per_client}
        out.records = sorted([*self.records, *other.records], key=lambda r: r.client_id)
        return out

    def mean(self, key: str) -> NDArray[np.float32]:
        """The weighted mean of `key` over every accepted client."""
        total = self.sums[key].astype(np.float64) * 2.0 ** -self.shifts[key]
        out: NDArray[np.float32] = (total / self.weight).astype(np.float32)
        return out

    def accepted(self) -> list[ClientRecord]:
        return [r for r in self.records if r.rejected is None]

    def rejected(self) -> dict[int, str]:
        return {r.client_id: r.rejected for r in self.records if r.rejected is not None}


def screen_updates(
    global_state: ModelState, updates: list[ClientUpdate], max_norm: float | None
) -> tuple[list[ClientUpdate], dict[int, str]]:
    """Drop updates with NaN/Inf values or too far from the global state; say why.

    A rejected update is never aggregated, so one broken or poisoned client cannot move
    the global model.
    """
    kept: list[ClientUpdate] = []
    rejected: dict[int, str] = {}
    for u in updates:
        arrays = [*u.state.values(), *u.extras.values()]
        if not all(np.isfinite(a).all() for a in arrays) or not np.isfinite(u.loss):
            rejected[u.client_id] = "non-finite"
            continue
        if max_norm is not None:
            sq = sum(
                float(np.sum((u.state[k].astype(np.float64) - global_state[k]) ** 2))
                for k in global_state
            )
            if sq**0.5 > max_norm:
                rejected[u.client_id] = "norm"
                continue
        kept.append(u)
    return kept, rejected


def reduce_updates(
    rule: Summation,
    global_state: ModelState,
    shifts: dict[str, int],
    updates: list[ClientUpdate],
    max_norm: float | None,
) -> Reduced:
    """Screen updates (NaN/Inf, norm, range) and fold the accepted ones into one Reduced."""
    accepted, rejected = screen_updates(global_state, updates, max_norm)
    out = Reduced(shifts=dict(shifts))
    reference = global_state.get(CENTROIDS)
    for u in updates:
        reason = rejected.get(u.client_id)
        record = ClientRecord(u.client_id, u.num_samples, u.loss, reason)
        mine = u.state.get(CENTROIDS)
        if (
            reason is None
            and reference is not None
            and mine is not None
            and mine.shape == reference.shape
        ):
            record.aligned, record.gap_index, record.gap_matched = alignment(mine, reference)
        out.records.append(record)
    references = rule.summand_references(global_state)
    for u in accepted:
        summed, own = rule.client_arrays(u, global_state)
        if any(
            np.max(np.abs(v), initial=0.0) > value_bound(references[k]) for k, v in summed.items()
        ):
            next(r for r in out.records if r.client_id == u.client_id).rejected = "range"
            continue
        for key, value in summed.items():
            out.add(key, value, u.num_samples)
        if own:
            out.per_client[u.client_id] = own
        out.weight += u.num_samples
    return out


def weighted_mean(weights: list[float], parts: list[Arrays], key: str) -> NDArray[np.float64]:
    """sum_i w_i parts_i[key] / sum_i w_i, in float64 and in the given (arrival) order."""
    total = np.zeros_like(parts[0][key], dtype=np.float64)
    for w, part in zip(weights, parts, strict=True):
        total += w * part[key]
    out: NDArray[np.float64] = total / float(sum(weights))
    return out
