"""The values that pass between the server, the executors, the client hosts and strategies.

They are plain data (numpy arrays and numbers), so they cross process boundaries as they
are, and every module of the federation package can use them without importing another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fuss_ray.models.head import ModelState

Arrays = dict[str, NDArray[Any]]
CENTROIDS = "centroids"

__all__ = ["CENTROIDS", "Arrays", "Broadcast", "ClientUpdate", "ModelState"]


@dataclass(frozen=True)
class Broadcast:
    """What every client of a round receives: the global state, and anything its
    strategy sends along with it (SCAFFOLD's server control variate, say)."""

    state: ModelState
    extras: Arrays = field(default_factory=dict)


@dataclass
class ClientUpdate:
    """What a client returns after local training."""

    client_id: int
    num_samples: int
    state: ModelState
    occupancy: NDArray[np.float64]  # share of its pixels assigned to each centroid
    loss: float
    extras: Arrays = field(default_factory=dict)  # what its strategy's objective adds
