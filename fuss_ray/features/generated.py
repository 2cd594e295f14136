"""Seeded random feature maps: the benchmark workload's client data, never stored or shipped.

The canonical benchmark (docs/benchmarks.md) gives every client 16 frozen
feature maps generated from a per-client seed on the client's side. A client host draws a
block of maps the first time one of its images is read and keeps only the latest block, so
a host's memory does not grow with its number of clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fuss_ray.seeds import Stream, seed_stream


@dataclass
class GeneratedFeatures:
    """Stands in for a FeatureStore: images i in [k*block, (k+1)*block) share seed (seed, k)."""

    seed: int
    num_images: int
    shape: tuple[int, int, int] = (384, 28, 28)
    block: int = 16
    meta: dict[str, Any] = field(default_factory=dict)
    _cached: tuple[int, NDArray[np.float32]] | None = None

    def __len__(self) -> int:
        return self.num_images

    @property
    def feature_dim(self) -> int:
        return self.shape[0]

    def _block(self, b: int) -> NDArray[np.float32]:
        """The block's maps, drawn as the workload draws them: torch's normal generator."""
        if self._cached is None or self._cached[0] != b:
            import torch

            entropy = np.random.SeedSequence(seed_stream(Stream.GENERATED, self.seed, b))
            gen = torch.Generator().manual_seed(int(entropy.generate_state(1, np.uint64)[0] >> 1))
            maps = torch.randn((self.block, *self.shape), generator=gen).numpy()
            self._cached = (b, maps)
        return self._cached[1]

    def feature(self, index: int) -> NDArray[np.float32]:
        b, i = divmod(int(index), self.block)
        out: NDArray[np.float32] = self._block(b)[i]
        return out

    def gather(self, indices: NDArray[np.int64] | list[int]) -> NDArray[np.float32]:
        return np.stack([self.feature(int(i)) for i in indices])
