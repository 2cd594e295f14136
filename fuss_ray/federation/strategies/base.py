"""The one interface every federation strategy implements, and the registry behind names.

A strategy decides two things: what a client adds to its local objective (FedProx's
proximal term, MOON's contrastive term) and how the server merges clients' centroids into
the next global ones; centroids are where strategies differ, because they are
permutation-ambiguous. The head's merge rule and the server optimiser are the
federation's (`fuss_ray.federation.server_update`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, final

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, create_model

from fuss_ray.federation.buffer import Buffer
from fuss_ray.federation.objective import ClientObjective
from fuss_ray.federation.types import CENTROIDS, Arrays, Broadcast, ClientUpdate, ModelState
from fuss_ray.plugins import STRATEGIES

if TYPE_CHECKING:
    from fuss_ray.config import RunConfig
    from fuss_ray.data.partition import Partition

__all__ = [
    "CENTROIDS",
    "STRATEGIES",
    "Arrays",
    "Buffer",
    "ClientUpdate",
    "Contribution",
    "ModelState",
    "RunShape",
    "Strategy",
    "StrategyParams",
    "async_strategies",
    "build_strategy",
    "register_strategy",
    "strategy_for",
]


class StrategyParams(BaseModel):
    """Base for each strategy's own settings; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    name: str


P = TypeVar("P", bound=StrategyParams)


class RunShape:
    """What a run holds and how it is scored, where a strategy changes that.

    A federation (this default) trains the partition's clients, merges their heads by the
    configured rule and is scored on its global model. Centralised training (a `Pooled`
    shape, `centralized.py`) holds one client with every image and its own step budget;
    local-only training (`OwnModels`, `local.py`) merges nothing and is scored on each
    client's own model. The run's preparation, server and scoring ask the shape, never a
    strategy's name.
    """

    def config(self, config: RunConfig) -> RunConfig:
        """The run as this strategy trains it (centralised training: its step budget)."""
        return config

    def partition(self, partition: Partition, num_images: int) -> Partition:
        """The clients the run holds, of `num_images` training images."""
        return partition

    def budget(self) -> dict[str, Any]:
        """What `summary.json`'s `budget` records about the strategy's own step budget."""
        return {}

    def head_rule(self, configured: str) -> str:
        """How the head is merged: the federation's rule, or `own` where every client
        keeps its own head and nothing global moves."""
        return configured

    def client_models(self, buffer: Buffer) -> dict[int, ModelState]:
        """The accepted clients' models the server keeps for scoring."""
        return {}

    def scored_models(
        self, global_state: ModelState, client_states: dict[int, ModelState], client_ids: list[int]
    ) -> dict[int | None, ModelState]:
        """The models the run is scored on: the global one (key None), or every client's
        own (the mean over clients is then the run's score)."""
        return {None: global_state}


@dataclass
class Contribution:
    """What one client adds to a round's centroid rule, computed on its host.

    `summed`: arrays the hosts and then the server sample-weight-sum over the round's
    clients (each key needs an array of its scale from `Strategy.scales`, which fixes the
    exact fixed-point grid); `per_client`: small arrays the server needs client by client
    (FedCC's centroid pool).
    """

    summed: dict[str, NDArray[Any]] = field(default_factory=dict)
    per_client: Arrays = field(default_factory=dict)


class Strategy(ABC, Generic[P]):
    """A federation strategy: what a client adds to its objective, and how the centroids
    of a round's clients become the next global centroids.

    The head is merged by the federation's rule, the same for every strategy (see
    `fuss_ray.federation.server_update`); centroids are where strategies differ, because
    they are permutation-ambiguous. A strategy author overrides, of six hooks, those it
    needs:
    - `client_objective()`: the hooks that add loss terms, a starting point and
      per-client state to local training (FedProx, MOON, SCAFFOLD; `objective.py`);
    - `broadcast()`: what the server sends with the global state (SCAFFOLD's control);
    - the centroid rule, of one form for rounds and FedBuff buffers, split so that
      hosts do most of it: per client, its `contribution()` against the model it started
      from (what is weighted-summed, each key with an array of its scale in `scales()`,
      and what the server needs client by client); on the server, `reduce_centroids()`
      from the `Buffer` of merged contributions (the one abstract method), where a
      strategy with server memory also updates it;
    - `run_shape()`, only where the strategy changes the run itself (`RunShape`).
    A rule that has no meaning for stale clients sets `asynchronous = False` (SCAFFOLD:
    control variates under staleness are not defined here).
    What a strategy carries between rounds lives in `self.memory` (named arrays), which
    checkpoints save and restore. A new strategy is one module in this package (or in a
    plugin, see `fuss_ray.plugins`): its `Params`, its `reduce_centroids`, and whichever
    hooks it needs.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]]
    # Whether the rule also merges FedBuff buffers, whose groups started from older models
    # (the `Buffer` moves a stale group's positions by how far the model has since moved).
    asynchronous: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that names itself and writes no `Params` gets its parent's settings
        under its own name: `class Mine(FedAvg): name = "mine"` is a whole strategy."""
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and "Params" not in cls.__dict__:
            parent: type[StrategyParams] = getattr(cls, "Params", StrategyParams)
            params: Any = create_model(
                f"{cls.__name__}Params",
                __base__=parent,
                __module__=cls.__module__,
                name=(Literal[cls.name], cls.name),  # type: ignore[arg-type]
            )
            cls.Params = params

    def __init__(self, params: P, seed: int = 0) -> None:
        self.params = params
        self.seed = seed
        self.num_clients = 0  # the federation's size and data, once the server attaches
        self.total_samples = 0
        # What the strategy carries between rounds (SCAFFOLD's control variate), by name:
        # checkpoints save it and a resumed run restores it as it was.
        self.memory: dict[str, NDArray[Any]] = {}

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

    # The centroid rule ---------------------------------------------------------------

    def scales(self, global_state: ModelState) -> dict[str, Any]:
        """Each key of `Contribution.summed` with an array of its scale (from which the
        fixed-point grid's bounds are set; see `reduction.grid_shifts`)."""
        return {}

    def contribution(self, global_state: ModelState, update: ClientUpdate) -> Contribution:
        """Per client, on its host: what it adds to the centroid rule, against
        `global_state`, the model it started from (the current one in a round)."""
        return Contribution()

    @abstractmethod
    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], buffer: Buffer, server_round: int
    ) -> NDArray[np.float32]:
        """The next global centroids (after `global_centroids`, the current ones) from a
        round's or a buffer's merged contributions (`buffer.mean`, `buffer.pool`); a
        strategy with server memory updates `self.memory` from them here."""

    # A strategy that changes the run itself (centralised training pools the data,
    # local-only scores each client's own model) says so with its own `RunShape`.

    def run_shape(self) -> RunShape:
        """How the run differs from a federation's (by default it does not)."""
        return RunShape()

    @final
    def runs_asynchronously(self) -> bool:
        """Whether the strategy also runs on FedBuff buffers (its `asynchronous` flag)."""
        return self.asynchronous


_S = TypeVar("_S", bound=type[Strategy[Any]])


def register_strategy(cls: _S) -> _S:
    """Class decorator: make a strategy available by its `name` in configs."""
    return STRATEGIES.register(cls)  # type: ignore[no-any-return]


def build_strategy(raw: dict[str, Any], seed: int = 0) -> Strategy[Any]:
    """The strategy a config's `federation.strategy` section names, with its params."""
    cls = STRATEGIES[raw["name"]]
    params = cls.Params.model_validate(raw)
    strategy: Strategy[Any] = cls(params, seed)
    return strategy


def strategy_for(config: RunConfig) -> Strategy[Any]:
    """The strategy a run config names."""
    return build_strategy(config.federation.strategy, config.seed)


def async_strategies() -> list[str]:
    """The registered strategies that run asynchronously (with their default settings),
    for error messages; one that cannot be built without settings is left out."""
    from pydantic import ValidationError

    names = []
    for name in STRATEGIES:
        try:
            strategy = build_strategy({"name": name})
        except ValidationError:
            continue
        if strategy.runs_asynchronously():
            names.append(name)
    return sorted(names)
