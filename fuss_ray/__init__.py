"""fuss-ray: a simulator for federated unsupervised semantic segmentation (FUSS) on Ray.

The Python API (`load_config`, `run`, `RunResult`, `tune`, `study`, `StudyResult`,
`register_strategy`) is imported on first use, so that `import fuss_ray.config` in a Ray
actor or a config check stays light (no torch, no Ray); see `fuss_ray.api`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"load_config", "run", "RunResult", "StudyResult", "study", "tune"}
__all__ = [
    "RunResult",
    "StudyResult",
    "__version__",
    "load_config",
    "register_strategy",
    "run",
    "study",
    "tune",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        from fuss_ray import api

        return getattr(api, name)
    if name == "register_strategy":
        from fuss_ray.federation.strategies.base import register_strategy

        return register_strategy
    raise AttributeError(f"module 'fuss_ray' has no attribute '{name}'")
