"""The one interface every federation strategy implements, and the registry behind names.

A strategy decides two things: what a client adds to its local objective (FedProx's
proximal term, MOON's contrastive term) and how the server merges client updates into the
next global state. Head weights are merged by sample-weighted averaging in every strategy;
centroids are where strategies differ, because they are permutation-ambiguous.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from fuss_ray.federation.objective import ClientObjective
from fuss_ray.federation.reduction import Reduced, grid_shifts, reduce_updates
from fuss_ray.federation.types import CENTROIDS, Arrays, Broadcast, ClientUpdate, ModelState
from fuss_ray.plugins import STRATEGIES

if TYPE_CHECKING:
    from fuss_ray.config import RunConfig

__all__ = [
    "CENTROIDS",
    "STRATEGIES",
    "Arrays",
    "ClientUpdate",
    "ModelState",
    "Strategy",
    "StrategyParams",
    "build_strategy",
    "register_strategy",
    "strategy_for",
]


class StrategyParams(BaseModel):
    """Base for each strategy's own settings; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    name: str


P = TypeVar("P", bound=StrategyParams)


class Strategy(ABC, Generic[P]):
    """Base strategy: FedAvg of the head; subclasses choose the centroid merge.

    A strategy owns both halves of federated training:
    - the client's: `client_objective()` returns the hooks that add loss terms, a starting
      point and per-client state to local training (see `fuss_ray.federation.objective`),
      and `broadcast()` what the server sends with the global state;
    - the server's: aggregation is split so that hosts do most of it. On each host,
      `summed_arrays` and `per_client_arrays` say what each accepted client contributes
      (arrays to be weighted-summed, arrays kept client by client) and
      `reduction.reduce_updates` folds them into one `Reduced`; on the server, `finish`
      turns the merged `Reduced` into the next global state.
    A new strategy is one module in this package (or in a plugin, see `fuss_ray.plugins`):
    its `Params`, its `reduce_centroids`, and whichever hooks it needs.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]]
    federated: ClassVar[bool] = True  # False: clients keep their own state (local-only)
    pools_data: ClassVar[bool] = False  # True: all training data on one client (centralised)

    def __init__(
        self,
        params: P,
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
        self.num_clients = 0  # the federation's size and data, once the server attaches
        self.total_samples = 0
        self._velocity: dict[str, NDArray[np.float64]] = {}

    def attach(self, num_clients: int, total_samples: int) -> None:
        """Told by the server once: how many clients and training images exist in all."""
        self.num_clients = num_clients
        self.total_samples = total_samples

    def client_objective(self) -> ClientObjective:
        """The hooks of local training (one instance per client host)."""
        return ClientObjective()

    def broadcast(self, state: ModelState) -> Broadcast:
        """What the server sends each sampled client this round."""
        return Broadcast(state)

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

    def centroid_per_client(self, update: ClientUpdate) -> Arrays:
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

    def per_client_arrays(self, update: ClientUpdate) -> Arrays:
        out: Arrays = {}
        if not self.reducible_head():
            out.update({k: v for k, v in update.state.items() if k != CENTROIDS})
        out.update(self.centroid_per_client(update))
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
        ids = sorted(c for c in reduced.per_client if c in kept)
        new: ModelState = {}
        for key, old in global_state.items():
            if key == CENTROIDS:
                continue
            if self.reducible_head():
                avg = reduced.mean(key)
            else:
                avg = self._combine_head([reduced.per_client[c][key] for c in ids])
            if self.server_lr == 1.0 and self.server_momentum == 0.0:
                new[key] = avg
                continue
            new[key] = self._server_step(key, old, avg.astype(np.float64) - old)
        new[CENTROIDS] = self.reduce_centroids(
            global_state[CENTROIDS], reduced, server_round
        ).astype(np.float32)
        return new

    def _server_step(
        self, key: str, old: NDArray[np.float32], delta: NDArray[np.float64]
    ) -> NDArray[np.float32]:
        """old + server_lr x velocity, velocity = momentum x velocity + delta (FedAvgM)."""
        velocity = self.server_momentum * self._velocity.get(key, 0.0) + delta
        self._velocity[key] = velocity
        return (old.astype(np.float64) + self.server_lr * velocity).astype(np.float32)

    # Asynchronous federation (FedBuff, `federation.mode: async`). A strategy that sets
    # `supports_async` defines what a client contributes against the model it started
    # from, and how a full buffer of contributions moves the centroids.
    supports_async: ClassVar[bool] = False

    def async_contribution(self, start: ModelState, update: ClientUpdate) -> Arrays:
        """A client's update as the buffer holds it: its change of the head since the model
        it started from, and its centroid contribution (`async_centroids`)."""
        out: Arrays = {
            k: update.state[k].astype(np.float64) - v.astype(np.float64)
            for k, v in start.items()
            if k != CENTROIDS
        }
        out.update(self.async_centroids(start[CENTROIDS], update))
        return out

    def async_centroids(self, start: NDArray[np.float32], update: ClientUpdate) -> Arrays:
        """The centroid part of a client's contribution (see `async_contribution`)."""
        raise NotImplementedError(f"{self.name} does not run asynchronously")

    def buffer_centroids(
        self, current: NDArray[np.float32], weights: list[float], parts: list[Arrays], version: int
    ) -> NDArray[np.float32]:
        """The next centroids from a full buffer (weights and contributions, in order)."""
        raise NotImplementedError(f"{self.name} does not run asynchronously")

    def apply_buffer(
        self, state: ModelState, weights: list[float], parts: list[Arrays], version: int
    ) -> ModelState:
        """The next global state from a full buffer: the head moves by the weighted mean of
        the clients' changes (weights: staleness x samples; with the server step and
        momentum of synchronous rounds), the centroids by `buffer_centroids`."""
        new: ModelState = {}
        for key, old in state.items():
            if key != CENTROIDS:
                new[key] = self._server_step(key, old, weighted_mean(weights, parts, key))
        new[CENTROIDS] = self.buffer_centroids(state[CENTROIDS], weights, parts, version).astype(
            np.float32
        )
        return new


def weighted_mean(weights: list[float], parts: list[Arrays], key: str) -> NDArray[np.float64]:
    """sum_i w_i parts_i[key] / sum_i w_i, in float64 and in the given (arrival) order."""
    total = np.zeros_like(parts[0][key], dtype=np.float64)
    for w, part in zip(weights, parts, strict=True):
        total += w * part[key]
    out: NDArray[np.float64] = total / float(sum(weights))
    return out


_S = TypeVar("_S", bound=type[Strategy[Any]])


def register_strategy(cls: _S) -> _S:
    """Class decorator: make a strategy available by its `name` in configs."""
    return STRATEGIES.register(cls)  # type: ignore[no-any-return]


def build_strategy(
    raw: dict[str, Any],
    seed: int,
    server_lr: float = 1.0,
    server_momentum: float = 0.0,
    head_aggregation: str = "mean",
    trim_fraction: float = 0.1,
) -> Strategy[Any]:
    cls = STRATEGIES[raw["name"]]
    params = cls.Params.model_validate(raw)
    strategy: Strategy[Any] = cls(
        params, seed, server_lr, server_momentum, head_aggregation, trim_fraction
    )
    return strategy


def strategy_for(config: RunConfig) -> Strategy[Any]:
    """The strategy a run config names, with its federation's server settings."""
    fed = config.federation
    return build_strategy(
        fed.strategy,
        config.seed,
        fed.server_lr,
        fed.server_momentum,
        fed.head_aggregation,
        fed.trim_fraction,
    )
