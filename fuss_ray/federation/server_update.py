"""The server's update: how a round's client updates become the next global state.

What strategies differ in is the centroids (they are permutation-ambiguous) and what a
client adds to its objective. How the head is merged, and how the server then moves it,
is the federation's setting, the same for every strategy: `federation.head_aggregation`
(a sample-weighted mean, or a coordinate-wise median or trimmed mean that outliers cannot
drag; Yin et al., 2018) and `federation.server_lr` / `server_momentum` (FedAvgM, Hsu et
al., 2019). This module holds that half, so a strategy is only its own rule.

The update is also the reduction protocol's other half (`reduction.Summation`): per
client, the arrays hosts weighted-sum (the head when its rule is a mean, plus the
strategy's centroid summands) and the arrays they keep client by client (every head for
a median, plus the strategy's per-client centroids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fuss_ray.federation.buffer import Buffer
from fuss_ray.federation.reduction import grid_shifts, reduce_updates
from fuss_ray.federation.strategies.base import Strategy, build_strategy
from fuss_ray.federation.types import CENTROIDS, Arrays, ClientUpdate, ModelState

if TYPE_CHECKING:
    from fuss_ray.config import FederationConfig

VELOCITY = "velocity:"  # the server momentum's keys in a checkpoint's strategy arrays


@dataclass(frozen=True)
class ServerSettings:
    """The federation's head rule and server optimiser (see the module docstring)."""

    server_lr: float = 1.0
    server_momentum: float = 0.0
    head_aggregation: str = "mean"
    trim_fraction: float = 0.1

    @classmethod
    def of(cls, fed: FederationConfig) -> ServerSettings:
        return cls(fed.server_lr, fed.server_momentum, fed.head_aggregation, fed.trim_fraction)

    def plain(self) -> bool:
        """lr 1 and no momentum: the merged head is the next head (plain FedAvg)."""
        return self.server_lr == 1.0 and self.server_momentum == 0.0


class ServerUpdate:
    """The next global state from a buffer of merged contributions."""

    def __init__(self, strategy: Strategy[Any], settings: ServerSettings | None = None) -> None:
        self.strategy = strategy
        self.settings = settings or ServerSettings()
        self.shape = strategy.run_shape()  # asked once: hosts read it per client
        self._velocity: dict[str, NDArray[np.float64]] = {}

    # What hosts compute per client (the reduction protocol) -------------------------

    def _head_rule(self) -> str:
        """mean, median or trimmed_mean; `own` where clients keep their own heads."""
        return self.shape.head_rule(self.settings.head_aggregation)

    def summand_references(self, global_state: ModelState) -> dict[str, NDArray[Any]]:
        """Every summed key with an array of its scale, from which the grid is fixed."""
        refs: dict[str, NDArray[Any]] = {}
        if self._head_rule() == "mean":
            refs.update({k: v for k, v in global_state.items() if k != CENTROIDS})
        refs.update(self.strategy.scales(global_state))
        return refs

    def client_arrays(
        self, update: ClientUpdate, global_state: ModelState
    ) -> tuple[dict[str, NDArray[Any]], Arrays]:
        """Per client, on its host: what is summed over the round (the head, under the mean
        rule, and the strategy's summands) and what the server keeps client by client."""
        rule = self._head_rule()
        head = {k: v for k, v in update.state.items() if k != CENTROIDS}
        part = self.strategy.contribution(global_state, update)
        summed: dict[str, NDArray[Any]] = dict(head) if rule == "mean" else {}
        summed.update(part.summed)
        own: Arrays = {}
        if rule == "own":
            own.update(update.state)
        elif rule != "mean":
            own.update(head)
        own.update(part.per_client)
        return summed, own

    def grid(self, global_state: ModelState, total_weight: int) -> dict[str, int]:
        """The round's fixed-point grid (see `reduction.grid_shifts`)."""
        return grid_shifts(self.summand_references(global_state), total_weight)

    # The server's half ---------------------------------------------------------------

    def merge(self, buffer: Buffer, server_round: int) -> ModelState:
        """The next global state from a buffer (a synchronous round is one fresh group):
        the head merged by its rule and moved by the server step, the centroids by the
        strategy."""
        rule = self._head_rule()
        current = buffer.current
        if rule == "own":  # no global model moves; the server keeps every client's
            return dict(current)
        new: ModelState = {}
        for key, old in current.items():
            if key == CENTROIDS:
                continue
            if rule == "mean":
                avg = buffer.mean(key)
            else:
                avg = self._robust([own[key] for _, own in buffer.own()], rule)
            if self.settings.plain():
                new[key] = avg
                continue
            new[key] = self._server_step(key, old, avg.astype(np.float64) - old)
        new[CENTROIDS] = self.strategy.reduce_centroids(
            current[CENTROIDS], buffer, server_round
        ).astype(np.float32)
        return new

    def aggregate(
        self, global_state: ModelState, updates: list[ClientUpdate], server_round: int
    ) -> ModelState:
        """The next global state from whole updates, reduced in one place (tests,
        references): the same path hosts and server take together."""
        shifts = self.grid(global_state, sum(u.num_samples for u in updates))
        reduced = reduce_updates(self, global_state, shifts, updates, None)
        return self.merge(Buffer.round(global_state, server_round - 1, reduced), server_round)

    def _robust(self, arrays: list[NDArray[np.float32]], rule: str) -> NDArray[np.float32]:
        """A coordinate-wise rule that outliers cannot drag (median, trimmed mean)."""
        stacked = np.stack([a.astype(np.float64) for a in arrays])
        if rule == "median":
            out: NDArray[np.float32] = np.median(stacked, axis=0).astype(np.float32)
            return out
        cut = int(self.settings.trim_fraction * len(arrays))
        ordered = np.sort(stacked, axis=0)
        kept = ordered[cut : len(arrays) - cut]
        trimmed: NDArray[np.float32] = kept.mean(axis=0).astype(np.float32)
        return trimmed

    def _server_step(
        self, key: str, old: NDArray[np.float32], delta: NDArray[np.float64]
    ) -> NDArray[np.float32]:
        """old + server_lr x velocity, velocity = momentum x velocity + delta (FedAvgM)."""
        velocity = self.settings.server_momentum * self._velocity.get(key, 0.0) + delta
        self._velocity[key] = velocity
        return (old.astype(np.float64) + self.settings.server_lr * velocity).astype(np.float32)

    # Checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """The server momentum and the strategy's own memory, in one flat dict (the layout
        checkpoints have always had)."""
        out = {f"{VELOCITY}{k}": v for k, v in self._velocity.items()}
        out.update(self.strategy.memory)
        return out

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        self._velocity = {
            k.removeprefix(VELOCITY): v.astype(np.float64)
            for k, v in state.items()
            if k.startswith(VELOCITY)
        }
        self.strategy.memory = {k: v for k, v in state.items() if not k.startswith(VELOCITY)}


def server_update_for(strategy: Strategy[Any], fed: FederationConfig) -> ServerUpdate:
    """The update a run's federation section asks for, around its strategy."""
    return ServerUpdate(strategy, ServerSettings.of(fed))


def build_update(
    raw: dict[str, Any], seed: int = 0, settings: ServerSettings | None = None
) -> ServerUpdate:
    """A strategy by its config section, inside a server update (tests, tools, notebooks)."""
    return ServerUpdate(build_strategy(raw, seed), settings)
