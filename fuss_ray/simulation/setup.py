"""Everything a run builds before its first round, and where its client hosts live."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fuss_ray.config import RunConfig
from fuss_ray.data.partition import write_manifest
from fuss_ray.federation.checkpoint import Checkpoint
from fuss_ray.federation.client import HostSpec, build_model
from fuss_ray.federation.server_actor import ServerParts
from fuss_ray.federation.strategies import Strategy, strategy_for
from fuss_ray.io import sweep_temporaries
from fuss_ray.metrics.evaluate import evaluate_state
from fuss_ray.metrics.segmentation import random_assignment_scores
from fuss_ray.models.head import FussModel, ModelState
from fuss_ray.simulation.checks import (
    check_async,
    check_client_batch,
    check_fits,
    checkpoint_to_resume,
)
from fuss_ray.simulation.prepare import (
    Prepared,
    host_spec,
    initial_state,
    prepare,
)


@dataclass
class Setup:
    """Everything a run builds before its first round; nothing of it runs on an actor yet."""

    config: RunConfig  # after the centralised rule
    asked: str  # digest of the config as the caller gave it
    out_dir: Path
    prepared: Prepared
    strategy: Strategy[Any]
    spec: HostSpec
    model: FussModel
    initial: ModelState
    references: dict[str, dict[str, float]]  # random assignment, the untrained model
    restored: Checkpoint | None


def set_up(config: RunConfig, out_dir: Path, resume: bool, show_progress: bool) -> Setup:
    """Check, prepare and write what a run needs before its first round.

    Everything a user's input can break (strategy settings, data, paths, memory) fails
    here, in one line, before any actor starts; the only files written are the partition
    manifest and, for a fresh run, an emptied checkpoints folder.
    """
    asked = config.digest()
    strategy = strategy_for(config)  # its settings are checked before any data is read
    check_async(config, strategy)
    check_client_batch(config, strategy)
    config = strategy.run_shape().config(config)
    ckpt_root = out_dir / "checkpoints"
    restored = checkpoint_to_resume(config, out_dir) if resume else None
    prepared = prepare(config, show_progress)
    if out_dir.is_dir():
        sweep_temporaries(out_dir)  # left by a run of this folder that was killed mid-write
    write_manifest(
        out_dir / "partition.parquet", prepared.partition, prepared.image_ids, prepared.histograms
    )
    if restored is None and ckpt_root.exists():
        shutil.rmtree(ckpt_root)  # a fresh run must never restore another run's clients
    spec = host_spec(config, prepared, ckpt_root)
    dim = prepared.train_store.feature_dim
    initial = initial_state(config, dim)
    model = build_model(config, dim)
    num_classes = config.data.num_classes
    store, _ = prepared.scored()  # references on the test split, else on validation
    labels = np.stack([store.label(i) for i in range(len(store))])
    random_ref = random_assignment_scores(labels, num_classes, config.num_centroids, config.seed)
    initial_ref = evaluate_state(model, initial, store, num_classes)
    references = {
        name: {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"]}
        for name, scores in (("random_assignment", random_ref), ("initial_model", initial_ref))
    }
    check_fits(config, spec, initial, len(store))
    return Setup(
        config, asked, out_dir, prepared, strategy, spec, model, initial, references, restored
    )


def server_parts(setup: Setup) -> ServerParts:
    """What the round loop is built from, wherever it runs."""
    prepared = setup.prepared
    return ServerParts(
        setup.config,
        setup.strategy,
        setup.spec,
        prepared.eval_store,
        prepared.val_store,
        setup.model,
        setup.initial,
        setup.out_dir / "checkpoints",
    )
