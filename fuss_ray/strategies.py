"""The built-in federation strategies and what a new one is written with, in one place.

    from fuss_ray.strategies import IndexAveraging, StrategyParams, register_strategy

Each class lives in its own module under `fuss_ray/federation/strategies/`; this module
only gathers them for users (a notebook's subclass of a built-in, a plugin).
"""

from fuss_ray.federation.server_update import ServerSettings, ServerUpdate, build_update
from fuss_ray.federation.strategies import (
    STRATEGIES,
    Strategy,
    StrategyParams,
    build_strategy,
    register_strategy,
)
from fuss_ray.federation.strategies.centralized import Centralized
from fuss_ray.federation.strategies.fedavg import FedAvg, IndexAveraging
from fuss_ray.federation.strategies.fedcc import FussKMeans, FussMaximin
from fuss_ray.federation.strategies.fedprox import FedProx
from fuss_ray.federation.strategies.local import LocalOnly
from fuss_ray.federation.strategies.moon import Moon
from fuss_ray.federation.strategies.ot_match import OTMatch
from fuss_ray.federation.strategies.scaffold import Scaffold

__all__ = [
    "STRATEGIES",
    "Centralized",
    "FedAvg",
    "FedProx",
    "FussKMeans",
    "FussMaximin",
    "IndexAveraging",
    "LocalOnly",
    "Moon",
    "OTMatch",
    "Scaffold",
    "ServerSettings",
    "ServerUpdate",
    "Strategy",
    "StrategyParams",
    "build_strategy",
    "build_update",
    "register_strategy",
]
