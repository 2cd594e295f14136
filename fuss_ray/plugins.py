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

A class registered where no other process can import it (in `__main__`, a notebook, a
script or module beside it that is not installed) travels with the run instead:
`shipment()` pickles every such class by value (cloudpickle), the run hands the bytes
to its actors and Tune trials, and `receive()` registers them there before any config is
checked. Nothing needs installing to try a strategy written in a notebook cell.
"""

from __future__ import annotations

import importlib
import logging
import sys
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
        self._loading = False
        self._local: set[str] = set()  # names no other process finds (see `shipment`)

    def register(self, item: T) -> T:
        """Class decorator (or plain call): make `item` available under its name."""
        name = self._key(item)
        self._items[name] = item
        module = str(getattr(item, "__module__", "__main__"))
        if self._loading or module.startswith("fuss_ray."):
            self._local.discard(name)  # fuss-ray's own, or a plugin's entry point
        else:
            self._local.add(name)  # __main__, a notebook, a module beside them
        return item

    def local_items(self) -> list[T]:
        """What was registered here from outside fuss-ray and its plugins' entry points:
        classes another process cannot find by importing anything."""
        return [self._items[name] for name in sorted(self._local)]

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        self._loading = True
        try:
            self._load_all()
        finally:
            self._loading = False

    def _load_all(self) -> None:
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

_REGISTRIES: dict[str, Registry[Any]] = {r.group: r for r in (DATASETS, STRATEGIES)}


def shipment() -> bytes | None:
    """Every registered class that other processes could not import, pickled by value
    with its registry's name; None where there is none (the usual case)."""
    local = [
        (group, item) for group, registry in _REGISTRIES.items() for item in registry.local_items()
    ]
    if not local:
        return None
    import cloudpickle

    modules = {item.__module__ for _, item in local} - {"__main__"}
    by_value = [sys.modules[m] for m in modules if m in sys.modules]
    for module in by_value:  # a local file's classes travel as code, not as an import
        cloudpickle.register_pickle_by_value(module)
    try:
        blob: bytes = cloudpickle.dumps(local)
    finally:
        for module in by_value:
            cloudpickle.unregister_pickle_by_value(module)
    return blob


def receive(blob: bytes | None) -> None:
    """Register the classes of a `shipment()` in this process's registries."""
    if blob is None:
        return
    import pickle

    for group, item in pickle.loads(blob):
        _REGISTRIES[group].register(item)
