"""The one interface every federation strategy implements, and the registry behind names.

A strategy decides two things: what a client adds to its local objective (FedProx's
proximal term, MOON's contrastive term) and how the server merges client updates into the
next global state. Head weights are merged by sample-weighted averaging in every strategy;
centroids are where strategies differ, because they are permutation-ambiguous.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError

from fuss_ray.federation.reduction import Reduced, grid_shifts, reduce_updates

ModelState = dict[str, NDArray[np.float32]]
CENTROIDS = "centroids"


class StrategyParams(BaseModel):
    """Base for each strategy's own settings; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    name: str


@dataclass(frozen=True)
class LocalObjective:
    """Extra terms a strategy asks clients to add to L_corr + L_cluster."""

    prox_mu: float = 0.0
    moon_weight: float = 0.0
    moon_tau: float = 0.5


@dataclass
class ClientUpdate:
    """What a client returns after local training."""

    client_id: int
    num_samples: int
    state: ModelState
    occupancy: NDArray[np.float64]  # share of its pixels assigned to each centroid
    loss: float
    stats: dict[str, float] = field(default_factory=dict)


class Strategy(ABC):
    """Base strategy: FedAvg of the head; subclasses choose the centroid merge.

    Aggregation is split in two so that hosts can do most of it: on each host,
    `summed_arrays` and `pooled_arrays` say what each accepted client contributes (arrays to be
    weighted-summed, arrays kept per client), and `reduction.reduce_updates` folds them
    into one `Reduced`; on the server, `finish` turns the merged `Reduced` into the next
    global state. A new strategy names its centroid summands or pooled arrays and writes
    `reduce_centroids`.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]]
    federated: ClassVar[bool] = True  # False: clients keep their own state (local-only)
    pooled: ClassVar[bool] = False  # True: all training data on one client (centralised)

    def __init__(
        self,
        params: StrategyParams,
        seed: int = 0,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        head_aggregation: str = "mean",
        trim_fraction: float = 0.1,
    ) -> None:
        self.params = params
        self.seed = seed
        self.server_lr = server_lr
        self.server_momentum = server_momentum
        self.head_aggregation = head_aggregation
        self.trim_fraction = trim_fraction
        self._velocity: dict[str, NDArray[np.float64]] = {}

    def local_objective(self) -> LocalObjective:
        return LocalObjective()

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """What the strategy carries between rounds (FedAvgM velocity), for checkpoints.

        A strategy with more memory overrides both this and `load_state_dict`.
        """
        return {f"velocity:{k}": v for k, v in self._velocity.items()}

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        self._velocity = {
            k.removeprefix("velocity:"): v.astype(np.float64)
            for k, v in state.items()
            if k.startswith("velocity:")
        }

    def reducible_head(self) -> bool:
        """A mean can be summed on hosts; a median or trimmed mean needs every head."""
        return self.head_aggregation == "mean"

    def centroid_references(self, global_centroids: NDArray[np.float32]) -> dict[str, Any]:
        """Summand keys for the centroids, each with an array of its scale (grid bounds)."""
        return {}

    def centroid_summands(
        self, global_centroids: NDArray[np.float32], update: ClientUpdate
    ) -> dict[str, NDArray[Any]]:
        """Per client: centroid arrays to be weighted-summed (keys of centroid_references)."""
        return {}

    def centroid_pooled(self, update: ClientUpdate) -> dict[str, NDArray[Any]]:
        """Per client: small centroid arrays the server needs one by one (FedCC's pool)."""
        return {}

    @abstractmethod
    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], reduced: Reduced, server_round: int
    ) -> NDArray[np.float32]:
        """The next global centroids from the round's merged contributions."""

    def summand_references(self, global_state: ModelState) -> dict[str, NDArray[Any]]:
        """Every summed key with an array of its scale, from which the grid is fixed."""
        refs: dict[str, NDArray[Any]] = {}
        if self.reducible_head():
            refs.update({k: v for k, v in global_state.items() if k != CENTROIDS})
        refs.update(self.centroid_references(global_state[CENTROIDS]))
        return refs

    def summed_arrays(
        self, update: ClientUpdate, global_state: ModelState
    ) -> dict[str, NDArray[Any]]:
        out: dict[str, NDArray[Any]] = {}
        if self.reducible_head():
            out.update({k: v for k, v in update.state.items() if k != CENTROIDS})
        out.update(self.centroid_summands(global_state[CENTROIDS], update))
        return out

    def pooled_arrays(self, update: ClientUpdate) -> dict[str, NDArray[Any]]:
        out: dict[str, NDArray[Any]] = {}
        if not self.reducible_head():
            out.update({k: v for k, v in update.state.items() if k != CENTROIDS})
        out.update(self.centroid_pooled(update))
        return out

    def _combine_head(self, arrays: list[NDArray[np.float32]]) -> NDArray[np.float32]:
        """A robust coordinate-wise rule that outliers cannot drag (median, trimmed mean)."""
        stacked = np.stack([a.astype(np.float64) for a in arrays])
        if self.head_aggregation == "median":
            out: NDArray[np.float32] = np.median(stacked, axis=0).astype(np.float32)
            return out
        cut = int(self.trim_fraction * len(arrays))
        ordered = np.sort(stacked, axis=0)
        kept = ordered[cut : len(arrays) - cut]
        trimmed: NDArray[np.float32] = kept.mean(axis=0).astype(np.float32)
        return trimmed

    def aggregate(
        self, global_state: ModelState, updates: list[ClientUpdate], server_round: int
    ) -> ModelState:
        """The next global state from whole updates: reduce them in one place, then finish.

        The same path hosts and server take together, in one call (tests, references).
        """
        shifts = grid_shifts(
            self.summand_references(global_state), sum(u.num_samples for u in updates)
        )
        reduced = reduce_updates(self, global_state, shifts, updates, None)
        return self.finish(global_state, reduced, server_round)

    def finish(self, global_state: ModelState, reduced: Reduced, server_round: int) -> ModelState:
        """The next global state from a round's merged contributions.

        The head moves toward the weighted client average by a server step with optional
        momentum (FedAvgM); lr 1 and momentum 0 is plain FedAvg.
        """
        kept = {r.client_id for r in reduced.accepted()}
        ids = sorted(c for c in reduced.pooled if c in kept)
        new: ModelState = {}
        for key, old in global_state.items():
            if key == CENTROIDS:
                continue
            if self.reducible_head():
                avg = reduced.mean(key)
            else:
                avg = self._combine_head([reduced.pooled[c][key] for c in ids])
            if self.server_lr == 1.0 and self.server_momentum == 0.0:
                new[key] = avg
                continue
            delta = avg.astype(np.float64) - old.astype(np.float64)
            velocity = self.server_momentum * self._velocity.get(key, 0.0) + delta
            self._velocity[key] = velocity
            new[key] = (old.astype(np.float64) + self.server_lr * velocity).astype(np.float32)
        new[CENTROIDS] = self.reduce_centroids(
            global_state[CENTROIDS], reduced, server_round
        ).astype(np.float32)
        return new


_S = TypeVar("_S", bound=type[Strategy])
STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: _S) -> _S:
    """Class decorator: make a strategy available by its `name` in configs."""
    STRATEGIES[cls.name] = cls
    return cls


def strategy_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate a config's strategy section against that strategy's own params model."""
    name = raw.get("name")
    if name not in STRATEGIES:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"strategy.name must be one of: {known} (got {name!r})")
    try:
        return STRATEGIES[name].Params.model_validate(raw).model_dump()
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ValueError(f"strategy '{name}' has no setting '{key}'") from None
        raise ValueError(f"strategy.{key}: {first['msg']} (got {first.get('input')!r})") from None


def build_strategy(
    raw: dict[str, Any],
    seed: int,
    server_lr: float = 1.0,
    server_momentum: float = 0.0,
    head_aggregation: str = "mean",
    trim_fraction: float = 0.1,
) -> Strategy:
    cls = STRATEGIES[raw["name"]]
    params = cls.Params.model_validate(raw)
    return cls(params, seed, server_lr, server_momentum, head_aggregation, trim_fraction)


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
        if not all(np.isfinite(u.state[k]).all() for k in u.state) or not np.isfinite(u.loss):
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
