"""Every dataset adapter of this package, imported so that each registers its name.

The dataset registry (`fuss_ray.plugins.DATASETS`) imports this module on first use; a new
adapter is one new module in `fuss_ray/data/` that decorates its class with
`@register_dataset`, and nothing else is edited (other packages join through the
`fuss_ray.datasets` entry-point group).
"""

import importlib
import pkgutil

import fuss_ray.data as _package

for _module in pkgutil.iter_modules(_package.__path__):
    if _module.name != "sources":
        importlib.import_module(f"{_package.__name__}.{_module.name}")
