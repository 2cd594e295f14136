"""Preparation: datasets, the partition (as the strategy shapes it), features and the
clients' host descriptors, before anything trains."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fuss_ray.config import RunConfig
from fuss_ray.data.base import SegmentationDataset, Splits, label_histograms
from fuss_ray.data.partition import Partition, make_partition
from fuss_ray.data.splits import build_datasets
from fuss_ray.errors import UserError
from fuss_ray.features.cache import FeatureStore, ensure_features
from fuss_ray.federation.client import HostSpec, build_model
from fuss_ray.federation.strategies import strategy_for
from fuss_ray.models.head import ModelState, model_state
from fuss_ray.plugins import shipment


@dataclass
class Prepared:
    """The data side of a run, ready for clients."""

    partition: Partition
    histograms: np.ndarray
    image_ids: list[str]
    train_store: FeatureStore
    eval_store: FeatureStore | None  # the test split (None: not scored, never read)
    evaluation: SegmentationDataset
    skipped: list[str]  # unreadable input files left out, "path: reason"
    val_store: FeatureStore | None = None  # the labelled validation split, if any
    validation: SegmentationDataset | None = None

    def scored(self) -> tuple[FeatureStore, SegmentationDataset]:
        """The split a run shows its pictures and references on: test, else validation."""
        if self.eval_store is not None:
            return self.eval_store, self.evaluation
        assert self.val_store is not None and self.validation is not None
        return self.val_store, self.validation


def shaped_config(config: RunConfig) -> RunConfig:
    """The run as its strategy trains it (`RunShape.config`: centralised training's
    step budget); what `summary.json` and the round loop see."""
    return strategy_for(config).run_shape().config(config)


def simulated_clients(config: RunConfig) -> int:
    """How many clients the run holds (`RunShape.partition`: one for centralised
    training), without reading any data."""
    k = config.partition.num_clients
    sizes = strategy_for(config).run_shape().partition(Partition([np.zeros(0, np.int64)] * k), 0)
    return sizes.num_clients


def prepare_partition(config: RunConfig) -> tuple[Partition, np.ndarray, list[str], Splits]:
    """Datasets, label histograms and the seeded partition (centralised: one client).

    Only training masks are read here (for the label skew the partition simulates).
    """
    splits = build_datasets(config)
    train = splits.train
    hist = label_histograms(train, config.features.label_size)
    groups = [train.group(i) for i in range(len(train))]
    partition = make_partition(config.partition, hist, groups, config.seed)
    partition = strategy_for(config).run_shape().partition(partition, len(train))
    ids = [train.image_id(i) for i in range(len(train))]
    return partition, hist, ids, splits


def prepare(config: RunConfig, show_progress: bool = True) -> Prepared:
    """Partition and features of every split the run uses.

    With `evaluation.score_test` off (search trials) the test split is neither extracted
    nor read: selection sees the validation split only.
    """
    partition, hist, ids, splits = prepare_partition(config)
    train, val, evaluation = splits
    if config.features.mode == "online":
        from fuss_ray.features.online import online_descriptor

        train_store = FeatureStore.open(online_descriptor(config.features, train))
    else:
        train_store = ensure_features(config.features, train, "train", show_progress)
    val_store = (
        ensure_features(config.features, val, "val", show_progress) if val is not None else None
    )
    eval_store = None
    if config.evaluation.score_test:
        eval_store = ensure_features(
            config.features, evaluation, "eval", show_progress, **eval_extras(config)
        )
    elif val_store is None:
        raise UserError(
            "data.val_fraction: a run that does not score the test split needs a validation "
            "split to select on (val_fraction > 0)"
        )
    skipped = [*train.skipped, *evaluation.skipped]
    return Prepared(
        partition, hist, ids, train_store, eval_store, evaluation, skipped, val_store, val
    )


def eval_extras(config: RunConfig) -> dict[str, bool]:
    """What the evaluation cache must hold for the configured test-time options."""
    return {"flipped": config.evaluation.flip_tta, "images": config.evaluation.crf}


def host_spec(config: RunConfig, prepared: Prepared, restore_dir: Path | None = None) -> HostSpec:
    """What every client host needs: the config, the cache, its clients' images."""
    return HostSpec(
        config=config.to_dict(),
        store_path=str(prepared.train_store.path),
        clients={cid: idx.tolist() for cid, idx in enumerate(prepared.partition.clients)},
        restore_dir=str(restore_dir.resolve()) if restore_dir is not None else None,
        shipped=shipment(),
    )


def initial_state(config: RunConfig, in_dim: int) -> ModelState:
    """The state every client starts from: seeded, identical for all clients."""
    torch.manual_seed(config.seed)
    return model_state(build_model(config, in_dim))
