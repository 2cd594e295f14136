"""Federation strategies, one class per module, found by name through the registry."""

from fuss_ray.federation.strategies import (  # noqa: F401  (registration side effects)
    centralized,
    fedavg,
    fedcc,
    fedprox,
    local,
    moon,
    ot_match,
)
from fuss_ray.federation.strategies.base import (
    STRATEGIES,
    ClientUpdate,
    LocalObjective,
    Strategy,
    build_strategy,
    register_strategy,
    strategy_params,
)

__all__ = [
    "STRATEGIES",
    "ClientUpdate",
    "LocalObjective",
    "Strategy",
    "build_strategy",
    "register_strategy",
    "strategy_params",
]
