"""Dense features extracted once per dataset, stored as memory-mappable Arrow IPC shards.

Every client of a node maps the same files, so the page cache holds one copy however many
logical clients read them. A cache directory is named by a digest of everything that
determines its content (backbone, weights hash, input size, layers, dataset fingerprint,
label size); a mismatch in any of them means a different directory, never a stale reuse.

Each shard's size and BLAKE2b digest are recorded in meta.json; a cache is verified before
use, and a truncated or altered shard makes the whole split extract again rather than feed
wrong features to every client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from numpy.typing import NDArray

from fuss_ray.config import FeatureConfig
from fuss_ray.data.base import SegmentationDataset, digest, resize_center_crop
from fuss_ray.io import atomic_dir, atomic_path, exclusive
from fuss_ray.progress import progress_bar

log = logging.getLogger(__name__)
SHARD_IMAGES = 256
FORMAT_VERSION = 2  # 2: per-shard checksums


@dataclass(frozen=True)
class FeatureStore:
    """Read-only view of one split's cached features and labels (memory-mapped)."""

    path: Path
    features: list[NDArray[np.float32]]  # per shard: (n, D, h, w)
    labels: list[NDArray[np.uint8]]  # per shard: (n, L, L)
    meta: dict[str, Any]
    flipped: list[NDArray[np.float32]] | None = None  # features of the mirrored images
    images: list[NDArray[np.uint8]] | None = None  # (n, L, L, 3) RGB at label size, for a CRF
    reused: bool = True  # False: `ensure_features` extracted it in this call

    @classmethod
    def open(cls, path: Path) -> FeatureStore:
        """Map the shards from disk: every process of a node shares the page cache."""
        meta = read_meta(path)
        sources = [pa.memory_map(str(path / name), "r") for name in meta["shards"]]
        return cls._from_sources(path, sources, meta)

    @classmethod
    def from_buffers(cls, path: Path, buffers: list[Any], meta: dict[str, Any]) -> FeatureStore:
        """Read shards from in-memory buffers (Ray object-store views), without copying.

        Used where nodes share no file system: the driver puts each shard's bytes into the
        object store once and every actor of a node reads the same shared-memory copy.
        """
        sources = [pa.BufferReader(pa.py_buffer(b)) for b in buffers]
        return cls._from_sources(path, sources, meta)

    def shard_bytes(self) -> list[NDArray[np.uint8]]:
        """Each shard file's bytes, to be put into the object store."""
        return [np.fromfile(self.path / name, dtype=np.uint8) for name in self.meta["shards"]]

    @classmethod
    def _from_sources(cls, path: Path, sources: list[Any], meta: dict[str, Any]) -> FeatureStore:
        d, h, w = meta["feature_shape"]
        side = meta["label_size"]
        shapes = {
            "features": (d, h, w),
            "labels": (side, side),
            "flipped": (d, h, w),
            "images": (side, side, 3),
        }
        columns: dict[str, list[Any]] = {name: [] for name in shapes}
        for source in sources:
            table = pa.ipc.open_file(source).read_all()
            for name, shape in shapes.items():
                if name in table.column_names:
                    flat = table.column(name).combine_chunks().flatten()
                    columns[name].append(flat.to_numpy(zero_copy_only=True).reshape(-1, *shape))
        return cls(
            path,
            columns["features"],
            columns["labels"],
            meta,
            columns["flipped"] or None,
            columns["images"] or None,
        )

    def __len__(self) -> int:
        return int(self.meta["num_images"])

    @property
    def feature_dim(self) -> int:
        return int(self.meta["feature_shape"][0])

    def _locate(self, index: int) -> tuple[int, int]:
        return divmod(index, SHARD_IMAGES)

    def feature(self, index: int) -> NDArray[np.float32]:
        s, i = self._locate(index)
        out: NDArray[np.float32] = self.features[s][i]
        return out

    def label(self, index: int) -> NDArray[np.uint8]:
        s, i = self._locate(index)
        out: NDArray[np.uint8] = self.labels[s][i]
        return out

    def gather(self, indices: NDArray[np.int64] | list[int]) -> NDArray[np.float32]:
        """Copy the features of the given images into one contiguous (n, D, h, w) float32
        array (a float16 cache is widened here, on the copy)."""
        out: NDArray[np.float32] = np.stack([self.feature(int(i)) for i in indices]).astype(
            np.float32, copy=False
        )
        return out

    def gather_labels(self, indices: NDArray[np.int64] | list[int]) -> NDArray[np.uint8]:
        return np.stack([self.label(int(i)) for i in indices])

    def gather_flipped(self, indices: NDArray[np.int64] | list[int]) -> NDArray[np.float32]:
        """Features of the mirrored images (extracted only for flip test-time augmentation)."""
        if self.flipped is None:
            raise ValueError(f"{self.path}: extracted without mirrored features")
        maps = np.stack([self.flipped[s][i] for s, i in map(self._locate, map(int, indices))])
        out: NDArray[np.float32] = maps.astype(np.float32, copy=False)
        return out

    def gather_images(self, indices: NDArray[np.int64] | list[int]) -> NDArray[np.uint8]:
        """RGB at label size (stored only for the dense CRF, which needs the pixels)."""
        if self.images is None:
            raise ValueError(f"{self.path}: extracted without images")
        return np.stack([self.images[s][i] for s, i in map(self._locate, map(int, indices))])


@dataclass(frozen=True)
class Extraction:
    """What one split's cache holds beyond features and labels, and at which input side."""

    side: int
    flipped: bool = False
    images: bool = False

    @classmethod
    def for_split(cls, cfg: FeatureConfig, split: str, flipped: bool, images: bool) -> Extraction:
        """Evaluation may run at its own side (the paper's 320) with its test-time extras."""
        if split in ("eval", "val"):  # images that are scored, not trained on
            return cls(cfg.eval_input_size or cfg.input_size, flipped, images)
        return cls(cfg.input_size)


def cache_key(
    cfg: FeatureConfig, weights_sha: str, dataset: SegmentationDataset, extraction: Extraction
) -> str:
    parts: list[object] = [
        FORMAT_VERSION,
        cfg.backbone,
        weights_sha,
        extraction.side,
        cfg.layers,
        dataset.fingerprint(),
        cfg.label_size,
        extraction.flipped,
        extraction.images,
    ]
    if cfg.dtype != "float32":  # float32 caches keep the keys they always had
        parts.append(cfg.dtype)
    return digest(*parts)


def read_meta(path: Path) -> dict[str, Any]:
    """A cache folder's meta.json: shapes, shard names, sizes and checksums."""
    meta: dict[str, Any] = json.loads((path / "meta.json").read_text())
    return meta


def file_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "blake2b").hexdigest()


def verify_store(path: Path) -> str | None:
    """What is wrong with a cache folder (first problem found), or None if it is intact."""
    try:
        meta = read_meta(path)
        sums, sizes = meta["checksums"], meta["sizes"]
        for name in meta["shards"]:
            shard = path / name
            if not shard.is_file():
                return f"{name} is missing"
            if shard.stat().st_size != sizes[name]:
                return f"{name} is {shard.stat().st_size} bytes, {sizes[name]} were written"
            if file_digest(shard) != sums[name]:
                return f"{name} does not match its checksum"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"meta.json is unreadable ({type(exc).__name__})"
    return None


def _discard(path: Path) -> None:
    """Move a broken cache out of the way at once (atomic), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.broken.", dir=path.parent))
    path.rename(trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


def ensure_features(
    cfg: FeatureConfig,
    dataset: SegmentationDataset,
    split: str,
    show_progress: bool = True,
    flipped: bool = False,
    images: bool = False,
) -> FeatureStore:
    """Open the matching cache, extracting it first if it does not exist yet.

    `flipped` and `images` (evaluation only) also store the mirrored images' features for
    flip test-time augmentation and the label-size pixels a dense CRF needs.
    """
    from fuss_ray.features.backbone import create_backbone, resolve_weights

    weights = resolve_weights(cfg)
    extraction = Extraction.for_split(cfg, split, flipped, images)
    path = cfg.cache_dir / f"{split}-{cache_key(cfg, weights.sha256, dataset, extraction)}"
    with exclusive(path, "this feature cache"):  # runs that need it at once extract it once
        if (path / "meta.json").is_file():
            problem = verify_store(path)
            if problem is None:
                return FeatureStore.open(path)
            log.warning("feature cache %s: %s; extracting it again", path, problem)
            _discard(path)
        backbone = create_backbone(cfg, weights)
        extract_to(path, backbone, dataset, cfg, split, weights.sha256, show_progress, extraction)
    return replace(FeatureStore.open(path), reused=False)


def _write_shard(path: Path, columns: dict[str, NDArray[Any]]) -> None:
    """One Arrow IPC file; each column holds one fixed-size list per image."""
    arrow_type = {
        np.dtype(np.float32): pa.float32(),
        np.dtype(np.float16): pa.float16(),
        np.dtype(np.uint8): pa.uint8(),
    }
    table = pa.table(
        {
            name: pa.FixedSizeListArray.from_arrays(
                pa.array(values.reshape(-1), arrow_type[values.dtype]), values[0].size
            )
            for name, values in columns.items()
        }
    )
    with (
        atomic_path(path) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        writer.write_table(table)


def image_batch(images: list[NDArray[np.uint8]], side: int) -> torch.Tensor:
    """RGB images as the backbone's input: shorter side to `side`, centre square, B x 3 x S x S."""
    arr = np.stack([resize_center_crop(im, side) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float()


@torch.no_grad()
def extract_to(
    path: Path,
    backbone: torch.nn.Module,
    dataset: SegmentationDataset,
    cfg: FeatureConfig,
    split: str,
    weights_sha: str,
    show_progress: bool = True,
    extraction: Extraction | None = None,
) -> None:
    """Run the backbone over the dataset and write the shards plus meta.json atomically."""
    extraction = extraction or Extraction(cfg.input_size)
    n = len(dataset)
    shards: list[str] = []
    checksums: dict[str, str] = {}
    sizes: dict[str, int] = {}
    shape: list[int] = []
    with (
        atomic_dir(path) as tmp,
        progress_bar(f"extract {split}", total=n, enabled=show_progress) as advance,
    ):
        for start in range(0, n, SHARD_IMAGES):
            stop = min(n, start + SHARD_IMAGES)
            parts: dict[str, list[NDArray[Any]]] = {"features": [], "labels": []}
            if extraction.flipped:
                parts["flipped"] = []
            if extraction.images:
                parts["images"] = []
            for b in range(start, stop, cfg.batch_size):
                idx = range(b, min(stop, b + cfg.batch_size))
                rgb = [dataset.image(i) for i in idx]
                x = image_batch(rgb, extraction.side)
                parts["features"].append(backbone(x).float().numpy().astype(cfg.dtype))
                if extraction.flipped:
                    mirrored = backbone(x.flip(-1)).float().numpy()
                    parts["flipped"].append(mirrored.astype(cfg.dtype))
                if extraction.images:
                    parts["images"].append(
                        np.stack([resize_center_crop(im, cfg.label_size) for im in rgb])
                    )
                parts["labels"].append(
                    np.stack(
                        [
                            resize_center_crop(dataset.mask(i), cfg.label_size, nearest=True)
                            for i in idx
                        ]
                    )
                )
                advance(len(idx))
            columns = {k: np.ascontiguousarray(np.concatenate(v)) for k, v in parts.items()}
            shape = list(columns["features"].shape[1:])
            name = f"shard-{start // SHARD_IMAGES:05d}.arrow"
            _write_shard(tmp / name, columns)
            shards.append(name)
            checksums[name] = file_digest(tmp / name)
            sizes[name] = (tmp / name).stat().st_size
        meta = {
            "format": FORMAT_VERSION,
            "split": split,
            "num_images": n,
            "feature_shape": shape,
            "label_size": cfg.label_size,
            "backbone": cfg.backbone,
            "weights_sha256": weights_sha,
            "input_size": extraction.side,
            "flipped": extraction.flipped,
            "images": extraction.images,
            "dtype": cfg.dtype,
            "dataset_fingerprint": dataset.fingerprint(),
            "image_ids": [dataset.image_id(i) for i in range(n)],
            "shards": shards,
            "checksums": checksums,
            "sizes": sizes,
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
