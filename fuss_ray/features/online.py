"""Training features computed by each actor's own backbone, for datasets too big to cache.

With `features.mode: online` nothing is extracted up front: the driver writes only a
descriptor (meta.json with the feature shape and the dataset fingerprint), and every client
host builds the training dataset and one frozen backbone on its device. At the start of a
round the host extracts the images of all the clients it is about to train, in batches of
`features.batch_size` across those clients, holds them for the round and drops them after,
so memory holds one round's shards per actor rather than the dataset. A client's kNN table
is mined from the same features the first time it trains, and kept.

The cache's guarantee that every executor sees bit-identical features does not carry over:
batches follow the host's own clients, and a backbone's last float bits may depend on the
batch it ran in. Results are deterministic for a given packing of clients onto hosts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from fuss_ray.data.base import SegmentationDataset
from fuss_ray.errors import UserError
from fuss_ray.features.cache import FORMAT_VERSION, cache_key, image_batch
from fuss_ray.io import atomic_dir

if TYPE_CHECKING:
    from fuss_ray.config import FeatureConfig, RunConfig


def online_descriptor(cfg: FeatureConfig, dataset: SegmentationDataset) -> Path:
    """Write (once) the meta.json that stands in for a training cache in online mode."""
    from fuss_ray.features.backbone import feature_geometry, resolve_weights
    from fuss_ray.features.cache import Extraction

    weights = resolve_weights(cfg)  # converts a DINO file once, before any actor needs it
    extraction = Extraction(cfg.input_size)
    path = cfg.cache_dir / f"online-{cache_key(cfg, weights.sha256, dataset, extraction)}"
    if (path / "meta.json").is_file():
        return path
    channels, stride = feature_geometry(cfg)
    grid = -(-cfg.input_size // stride)
    meta = {
        "format": FORMAT_VERSION,
        "mode": "online",
        "split": "train",
        "num_images": len(dataset),
        "feature_shape": [channels, grid, grid],
        "label_size": cfg.label_size,
        "backbone": cfg.backbone,
        "weights_sha256": weights.sha256,
        "input_size": cfg.input_size,
        "dataset_fingerprint": dataset.fingerprint(),
        "shards": [],
        "checksums": {},
        "sizes": {},
    }
    with atomic_dir(path) as tmp:
        (tmp / "meta.json").write_text(json.dumps(meta))
    return path


class OnlineFeatures:
    """The host's view of the training features: extracted on demand, held for a round."""

    def __init__(self, config: RunConfig, meta: dict[str, Any], device: torch.device) -> None:
        from fuss_ray.data.splits import build_datasets
        from fuss_ray.features.backbone import create_backbone

        dataset = build_datasets(config).train
        if dataset.fingerprint() != meta["dataset_fingerprint"]:
            raise UserError(
                "features.mode: online: the training data this actor sees differs from the "
                "driver's (is data.root the same path on every node?)"
            )
        self.dataset = dataset
        self.meta = meta
        self.cfg = config.features
        self.device = device
        self.backbone = create_backbone(config.features).to(device)
        self.held: dict[int, NDArray[np.float32]] = {}
        self.extracted = 0  # images run through the backbone by this host (for reports)

    def __len__(self) -> int:
        return int(self.meta["num_images"])

    @property
    def feature_dim(self) -> int:
        return int(self.meta["feature_shape"][0])

    @torch.no_grad()
    def _extract(self, indices: Sequence[int]) -> dict[int, NDArray[np.float32]]:
        out: dict[int, NDArray[np.float32]] = {}
        size = self.cfg.batch_size
        for start in range(0, len(indices), size):
            chunk = list(indices[start : start + size])
            x = image_batch([self.dataset.image(i) for i in chunk], self.cfg.input_size)
            feats = self.backbone(x.to(self.device)).float().cpu().numpy()
            out.update(zip(chunk, feats, strict=True))
            self.extracted += len(chunk)
        return out

    def gather(self, indices: NDArray[np.int64] | list[int]) -> NDArray[np.float32]:
        """Features of the given images: held ones from memory, others extracted now."""
        wanted = [int(i) for i in indices]
        missing = sorted({i for i in wanted if i not in self.held})
        fresh = self._extract(missing) if missing else {}
        return np.stack([self.held[i] if i in self.held else fresh[i] for i in wanted])

    @contextlib.contextmanager
    def hold(self, indices: Sequence[int]) -> Iterator[None]:
        """Extract these images once, batched across clients, and keep them for a round."""
        self.held = self._extract(sorted({int(i) for i in indices}))
        try:
            yield
        finally:
            self.held = {}
