"""Seeded partitioners that simulate the heterogeneity federated USS is studied under.

Each returns, for every client, the positions of its training images. The result is saved
as a Parquet manifest so that a run's split can be inspected and reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from fuss_ray.config import PartitionConfig
from fuss_ray.errors import UserError
from fuss_ray.io import atomic_path
from fuss_ray.seeds import Stream, seed_stream


@dataclass(frozen=True)
class Partition:
    """Which training images each client holds (positions into the training dataset)."""

    clients: list[NDArray[np.int64]]

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def sizes(self) -> list[int]:
        return [len(c) for c in self.clients]


_Splitter = Callable[
    [PartitionConfig, NDArray[np.int64], Sequence[str], np.random.Generator],
    list[NDArray[np.int64]],
]
PARTITIONERS: dict[str, _Splitter] = {}


def _register(name: str) -> Callable[[_Splitter], _Splitter]:
    def deco(fn: _Splitter) -> _Splitter:
        PARTITIONERS[name] = fn
        return fn

    return deco


@_register("iid")
def _iid(
    cfg: PartitionConfig,
    dominant: NDArray[np.int64],
    groups: Sequence[str],
    rng: np.random.Generator,
) -> list[NDArray[np.int64]]:
    return [np.sort(p) for p in np.array_split(rng.permutation(len(dominant)), cfg.num_clients)]


@_register("dirichlet")
def _dirichlet(
    cfg: PartitionConfig,
    dominant: NDArray[np.int64],
    groups: Sequence[str],
    rng: np.random.Generator,
) -> list[NDArray[np.int64]]:
    """Per class, split its images across clients by proportions ~ Dir(alpha).

    Draws are repeated until every client has `min_images`, as in NIID-Bench; after 1000
    failed draws the request is infeasible and the user is told which knobs to turn.
    """
    k = cfg.num_clients
    classes = np.unique(dominant)
    for _ in range(1000):
        buckets: list[list[int]] = [[] for _ in range(k)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(dominant == c))
            props = rng.dirichlet(np.full(k, cfg.alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for client, part in enumerate(np.split(idx, cuts)):
                buckets[client].extend(part.tolist())
        if min(len(b) for b in buckets) >= cfg.min_images:
            return [np.sort(np.asarray(b, dtype=np.int64)) for b in buckets]
    raise UserError(
        f"partition: no Dirichlet(alpha={cfg.alpha}) draw gave each of {k} clients "
        f"{cfg.min_images} images from {len(dominant)}; lower partition.min_images or "
        "partition.num_clients, or raise partition.alpha"
    )


@_register("pathological")
def _pathological(
    cfg: PartitionConfig,
    dominant: NDArray[np.int64],
    groups: Sequence[str],
    rng: np.random.Generator,
) -> list[NDArray[np.int64]]:
    """Sort by dominant class, cut into K*n shards, give each client n shards."""
    k, n = cfg.num_clients, cfg.classes_per_client
    order = np.lexsort((rng.random(len(dominant)), dominant))
    shards = np.array_split(order, k * n)
    pick = rng.permutation(k * n)
    return [
        np.sort(np.concatenate([shards[j] for j in pick[i * n : (i + 1) * n]])) for i in range(k)
    ]


@_register("natural")
def _natural(
    cfg: PartitionConfig,
    dominant: NDArray[np.int64],
    groups: Sequence[str],
    rng: np.random.Generator,
) -> list[NDArray[np.int64]]:
    """Whole groups (cities, sites, domains) go to clients, round-robin in sorted order."""
    names = sorted(set(groups))
    if len(names) < cfg.num_clients:
        raise UserError(
            f"partition.num_clients: {cfg.num_clients} clients but the data has only "
            f"{len(names)} natural groups ({', '.join(names[:5]) or 'none'})"
        )
    owner = {g: i % cfg.num_clients for i, g in enumerate(names)}
    buckets: list[list[int]] = [[] for _ in range(cfg.num_clients)]
    for i, g in enumerate(groups):
        buckets[owner[g]].append(i)
    return [np.asarray(b, dtype=np.int64) for b in buckets]


@_register("quantity")
def _quantity(
    cfg: PartitionConfig,
    dominant: NDArray[np.int64],
    groups: Sequence[str],
    rng: np.random.Generator,
) -> list[NDArray[np.int64]]:
    """Client sizes ~ Dir(alpha), labels IID: pure quantity skew."""
    n, k = len(dominant), cfg.num_clients
    spare = n - k * cfg.min_images
    if spare < 0:
        raise UserError(
            f"partition.min_images: {k} clients x {cfg.min_images} images exceeds the "
            f"{n} training images"
        )
    extra = rng.multinomial(spare, rng.dirichlet(np.full(k, cfg.alpha)))
    cuts = np.cumsum(extra + cfg.min_images)[:-1]
    return [np.sort(p) for p in np.split(rng.permutation(n), cuts)]


def make_partition(
    cfg: PartitionConfig,
    histograms: NDArray[np.int64],
    groups: Sequence[str],
    seed: int,
) -> Partition:
    """Split training images across clients; the same seed always gives the same split."""
    n = len(histograms)
    if cfg.num_clients > n:
        raise UserError(
            f"partition.num_clients: {cfg.num_clients} clients but only {n} training images"
        )
    dominant = histograms.argmax(axis=1).astype(np.int64)
    rng = np.random.default_rng(seed_stream(Stream.PARTITION, seed))
    clients = PARTITIONERS[cfg.kind](cfg, dominant, groups, rng)
    empty = [i for i, c in enumerate(clients) if len(c) == 0]
    if empty:
        raise UserError(
            f"partition: client {empty[0]} received no images under '{cfg.kind}' "
            f"({n} images, {cfg.num_clients} clients); use fewer clients"
        )
    return Partition(clients)


def write_manifest(
    path: Path, partition: Partition, image_ids: Sequence[str], histograms: NDArray[np.int64]
) -> None:
    """One row per (client, image): the split that the run used, for audit and reuse."""
    client_col, image_col, dom_col, pix_col = [], [], [], []
    for cid, idx in enumerate(partition.clients):
        for i in idx.tolist():
            client_col.append(cid)
            image_col.append(image_ids[i])
            dom_col.append(int(histograms[i].argmax()))
            pix_col.append(histograms[i].tolist())
    table = pa.table(
        {
            "client_id": pa.array(client_col, pa.int32()),
            "image_id": pa.array(image_col, pa.string()),
            "dominant_class": pa.array(dom_col, pa.int32()),
            "pixels_per_class": pa.array(pix_col, pa.list_(pa.int64())),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
