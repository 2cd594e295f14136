"""The one interface every federation strategy implements, and the registry behind names.

A strategy decides two things: what a client adds to its local objective (FedProx's
proximal term, MOON's contrastive term) and how the server merges clients' centroids into
the next global ones; centroids are where strategies differ, because they are
permutation-ambiguous. The head's merge rule and the server optimiser are the
federation's (`fuss_ray.federation.server_update`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, create_model

from fuss_ray.federation.objective import ClientObjective
from fuss_ray.federation.reduction import Reduced
from fuss_ray.federation.types import CENTROIDS, Arrays, Broadcast, ClientUpdate, ModelState
from fuss_ray.plugins import STRATEGIES

if TYPE_CHECKING:
    from fuss_ray.config import RunConfig
    from fuss_ray.data.partition import Partition

__all__ = [
    "CENTROIDS",
    "STRATEGIES",
    "Arrays",
    "ClientUpdate",
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

    def client_models(self, reduced: Reduced) -> dict[int, ModelState]:
        """The accepted clients' models the server keeps for scoring."""
        return {}

    def scored_models(
        self, global_state: ModelState, client_states: dict[int, ModelState], client_ids: list[int]
    ) -> dict[int | None, ModelState]:
        """The models the run is scored on: the global one (key None), or every client's
        own (the mean over clients is then the run's score)."""
        return {None: global_state}


class Strategy(ABC, Generic[P]):
    """A federation strategy: what a client adds to its objective, and how the centroids
    of a round's clients become the next global centroids.

    The head is merged by the federation's rule, the same for every strategy (see
    `fuss_ray.federation.server_update`); centroids are where strategies differ, because
    they are permutation-ambiguous. A strategy author overrides:
    - `client_objective()`: the hooks that add loss terms, a starting point and
      per-client state to local training (FedProx, MOON, SCAFFOLD; `objective.py`);
    - `broadcast()`: what the server sends with the global state (SCAFFOLD's control);
    - the centroid rule, in three parts so that hosts do most of it: per client, what is
      weighted-summed (`summands`, each key with an array of its scale in `scales`) and
      what the server needs client by client (`per_client`, FedCC's centroid pool); on the
      server, `reduce_centroids` from the merged contributions;
    - asynchronously (FedBuff), `async_centroids` and `buffer_centroids`;
    - `state_dict` / `load_state_dict` for what it carries between rounds;
    - `run_shape()`, only where the strategy changes the run itself (`RunShape`).
    A new strategy is one module in this package (or in a plugin, see `fuss_ray.plugins`):
    its `Params`, its `reduce_centroids`, and whichever hooks it needs.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]]

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
        """What the strategy carries between rounds, for checkpoints (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Undo `state_dict` (a strategy without memory has nothing to restore)."""

    # The centroid rule ---------------------------------------------------------------

    def scales(self, global_state: ModelState) -> dict[str, Any]:
        """Each key of `summands` with an array of its scale (from which the fixed-point
        grid's bounds are set; see `reduction.grid_shifts`)."""
        return {}

    def summands(self, global_state: ModelState, update: ClientUpdate) -> dict[str, NDArray[Any]]:
        """Per client: arrays to be sample-weighted-summed over the round's clients."""
        return {}

    def per_client(self, update: ClientUpdate) -> Arrays:
        """Per client: small arrays the server needs one by one (FedCC's pool)."""
        return {}

    @abstractmethod
    def reduce_centroids(
        self, global_centroids: NDArray[np.float32], reduced: Reduced, server_round: int
    ) -> NDArray[np.float32]:
        """The next global centroids from the round's merged contributions."""

    def after_merge(self, global_state: ModelState, reduced: Reduced) -> None:
        """Update the strategy's own server memory from the merged round (SCAFFOLD's
        control variate); nothing by default."""

    # Asynchronous federation (FedBuff, `federation.mode: async`): what a client
    # contributes against the centroids it started from, and how a full buffer of
    # contributions moves the centroids. A strategy without them runs synchronously only.

    def async_centroids(self, start: NDArray[np.float32], update: ClientUpdate) -> Arrays:
        """The centroid part of a client's buffered contribution."""
        raise NotImplementedError(f"{self.name} does not run asynchronously")

    def buffer_centroids(
        self, current: NDArray[np.float32], weights: list[float], parts: list[Arrays], version: int
    ) -> NDArray[np.float32]:
        """The next centroids from a full buffer (weights and contributions, in order)."""
        raise NotImplementedError(f"{self.name} does not run asynchronously")

    # A strategy that changes the run itself (centralised training pools the data,
    # local-only scores each client's own model) says so with its own `RunShape`.

    def run_shape(self) -> RunShape:
        """How the run differs from a federation's (by default it does not)."""
        return RunShape()

    supports_async: ClassVar[bool] = False  # True where the two async hooks are defined

    def runs_asynchronously(self) -> bool:
        """Whether the strategy has an asynchronous form (see `async_centroids`)."""
        return self.supports_async


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
    """The registered strategies that run asynchronously, for error messages."""
    return sorted(n for n, cls in STRATEGIES.items() if cls.supports_async)
