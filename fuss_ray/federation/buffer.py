"""What one server update merges: groups of clients, each trained from one start model.

There is one aggregation path for both modes. A synchronous round is a buffer of one
group, the round's cohort, trained from the current global model (staleness 0). An
asynchronous (FedBuff, Nguyen et al., 2022) buffer holds a group per model version its
clients started from, each weighted by a staleness function. Every merge rule (the head's
mean and each strategy's centroid rule) reads a `Buffer` through the same few questions,
so a strategy written for rounds also runs on buffers.

A stale group's clients moved from an older model. Its contribution counts as the change
they made, applied to the current model: the weighted mean over groups of
`mean_g + (current - start_g)`, which is `current + sum_g a_g (mean_g - start_g)`. The
term of a fresh group is exactly zero, so a synchronous round is the plain weighted mean,
bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.reduction import ClientRecord, Reduced
from fuss_ray.federation.types import CENTROIDS, Arrays, ModelState


@dataclass
class Group:
    """Clients trained from one model: their screened updates, reduced."""

    version: int  # the global model version they started from
    start: ModelState  # that model
    reduced: Reduced
    weight: float = 1.0  # the staleness weight of its clients (1 when fresh)


@dataclass
class Buffer:
    """The groups one server update merges into the next model after `current`."""

    current: ModelState
    version: int  # `current`'s version: a group that started from it is fresh
    groups: list[Group] = field(default_factory=list)

    @classmethod
    def round(cls, current: ModelState, version: int, reduced: Reduced) -> Buffer:
        """A synchronous round: the cohort, trained from the current model."""
        return cls(current, version, [Group(version, current, reduced)])

    def fresh(self) -> bool:
        """Whether every client started from the current model (a synchronous round)."""
        return all(g.version == self.version for g in self.groups)

    def _shares(self) -> list[tuple[float, Group]]:
        """Each group with accepted clients, with its share: staleness x samples, summing
        to 1 (exactly 1.0 for a single group)."""
        live = [g for g in self.groups if g.reduced.weight > 0]
        total = sum(g.weight * g.reduced.weight for g in live)
        return [(g.weight * g.reduced.weight / total, g) for g in live]

    def mean(self, key: str, like: str | None = None) -> NDArray[np.float32]:
        """The weighted mean of a summed array over the buffer's clients.

        `like` names the model array `key` is a position in (the head's own keys and
        `centroids` are their own; OT matching's aligned centroids are `centroids`); a
        stale group's mean is moved by how far the current model has moved since its
        start. An array that is not a position (SCAFFOLD's change of a control) is not.
        """
        frame = like if like is not None else (key if key in self.current else None)
        shares = self._shares()
        total = np.zeros(shares[0][1].reduced.sums[key].shape, np.float64)
        for share, g in shares:
            total += share * g.reduced.mean(key).astype(np.float64)
        for share, g in shares:
            if frame is not None and g.version != self.version:
                moved = self.current[frame].astype(np.float64) - g.start[frame]
                total += share * moved
        out: NDArray[np.float32] = total.astype(np.float32)
        return out

    def summed_keys(self) -> list[str]:
        """The keys hosts summed (the same in every group of one buffer)."""
        keys: dict[str, None] = {}
        for g in self.groups:
            keys.update(dict.fromkeys(g.reduced.sums))
        return list(keys)

    def records(self) -> list[ClientRecord]:
        """Every trained client's record, group by group (a client may be in two)."""
        return [r for g in self.groups for r in g.reduced.records]

    def accepted(self) -> list[ClientRecord]:
        return [r for r in self.records() if r.rejected is None]

    def rejected(self) -> dict[int, str]:
        return {r.client_id: r.rejected for r in self.records() if r.rejected is not None}

    def own(self) -> list[tuple[int, Arrays]]:
        """What accepted clients sent one by one (FedCC's centroids, robust rules' heads,
        local-only models): (client id, arrays), group by group and by id within one."""
        out: list[tuple[int, Arrays]] = []
        for g in self.groups:
            ids = sorted(r.client_id for r in g.reduced.accepted())
            out += [(c, g.reduced.per_client[c]) for c in ids if c in g.reduced.per_client]
        return out

    def pool(self, key: str = CENTROIDS) -> NDArray[np.float64]:
        """Every accepted client's `key`, client-major in `own()`'s order."""
        return np.concatenate([arrays[key].astype(np.float64) for _, arrays in self.own()])


def as_arrays(reduced: Reduced) -> tuple[Arrays, dict[str, Any]]:
    """A trained dispatch's `Reduced` as checkpoint arrays and JSON (see `from_arrays`)."""
    arrays: Arrays = {f"sum/{k}": v for k, v in reduced.sums.items()}
    for cid, own in reduced.per_client.items():
        arrays.update({f"own/{cid}/{k}": v for k, v in own.items()})
    meta = {
        "weight": reduced.weight,
        "shifts": reduced.shifts,
        "records": [vars(r) for r in reduced.records],
    }
    return arrays, meta


def from_arrays(arrays: Arrays, meta: dict[str, Any]) -> Reduced:
    """Undo `as_arrays`."""
    out = Reduced(weight=int(meta["weight"]), shifts={k: int(v) for k, v in meta["shifts"].items()})
    out.records = [ClientRecord(**r) for r in meta["records"]]
    for name, value in arrays.items():
        kind, _, rest = name.partition("/")
        if kind == "sum":
            out.sums[rest] = value.astype(np.int64)
        else:
            cid, _, key = rest.partition("/")
            out.per_client.setdefault(int(cid), {})[key] = value
    return out
