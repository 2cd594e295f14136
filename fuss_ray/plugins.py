"""Named implementations found lazily: fuss-ray's own, and those of other installed packages.

A registry is how a lower layer (the config, which checks a strategy's settings) reaches
implementations that live in a higher one (the federation strategies) without importing
them: the registry imports its built-in package by name on first use, then every entry
point of its group. A strategy shipped by another package therefore works wherever a
config is checked, in the driver, in Ray Tune trials and inside every actor, as long as
that package is installed there:

    # the plugin's pyproject.toml
    [project.entry-points."fuss_ray.strategies"]
    my-strategy = "my_package.my_module"      # a module that registers its classes
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from fuss_ray.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """name -> implementation, filled by `register` as modules are imported.

    Reading it (`registry[name]`, `name in registry`, iterating) first imports the
    built-in package and then the plugins of `group`, once per process.
    """

    def __init__(self, group: str, builtin_package: str, key: Callable[[T], str]) -> None:
        self.group = group
        self.builtin_package = builtin_package
        self._key = key
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, item: T) -> T:
        """Class decorator (or plain call): make `item` available under its name."""
        self._items[self._key(item)] = item
        return item

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        importlib.import_module(self.builtin_package)
        for point in entry_points(group=self.group):
            try:
                loaded: Any = point.load()
            except Exception as exc:
                raise UserError(
                    f"the {self.group} plugin '{point.name}' ({point.value}) failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            if isinstance(loaded, type):
                self.register(loaded)  # type: ignore[arg-type]  # a class, not a module

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(dict(self._items))

    def __len__(self) -> int:
        self._load()
        return len(self._items)


def _strategy_name(cls: Any) -> str:
    return str(cls.name)


def _dataset_name(cls: Any) -> str:
    return str(cls.dataset)


# Dataset adapters (fuss_ray.data.base.SegmentationDataset subclasses with a `dataset` name).
DATASETS: Registry[Any] = Registry("fuss_ray.datasets", "fuss_ray.data.sources", _dataset_name)

# Federation strategies (fuss_ray.federation.strategies.base.Strategy subclasses).
STRATEGIES: Registry[Any] = Registry(
    "fuss_ray.strategies", "fuss_ray.federation.strategies", _strategy_name
)
