"""Federation strategies, one class per module, found by name through the registry.

Every module of this package is imported here, so a new strategy is one new file;
strategies of other installed packages join through the `fuss_ray.strategies` entry-point
group (see `fuss_ray.plugins`).
"""

import importlib
import pkgutil

from fuss_ray.federation.strategies.base import (
    STRATEGIES,
    Buffer,
    ClientUpdate,
    Contribution,
    Strategy,
    StrategyParams,
    async_strategies,
    build_strategy,
    register_strategy,
    strategy_for,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "STRATEGIES",
    "Buffer",
    "ClientUpdate",
    "Contribution",
    "Strategy",
    "StrategyParams",
    "async_strategies",
    "build_strategy",
    "register_strategy",
    "strategy_for",
]
