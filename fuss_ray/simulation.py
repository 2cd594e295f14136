"""One simulation end to end: data -> partition -> features -> clients -> server -> results.

Everything that can fail because of the user's input (config, dataset, paths) is checked
before any actor starts or any file is written to the output folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fuss_ray.config import RunConfig
from fuss_ray.data.base import SegmentationDataset, build_datasets, label_histograms
from fuss_ray.data.partition import Partition, make_partition, write_manifest
from fuss_ray.features.cache import FeatureStore, ensure_features
from fuss_ray.federation.client import HostSpec, build_model
from fuss_ray.federation.executor import Executor, RayExecutor, SequentialExecutor
from fuss_ray.federation.server import Server
from fuss_ray.federation.strategies import Strategy, build_strategy
from fuss_ray.io import write_json
from fuss_ray.metrics.evaluate import evaluate_state
from fuss_ray.metrics.segmentation import random_assignment_scores
from fuss_ray.models.head import ModelState, model_state
from fuss_ray.progress import progress_bar
from fuss_ray.tracking import make_tracker
from fuss_ray.tracking.artifacts import write_artifacts


@dataclass
class Prepared:
    """The data side of a run, ready for clients."""

    partition: Partition
    histograms: np.ndarray
    image_ids: list[str]
    train_store: FeatureStore
    eval_store: FeatureStore
    evaluation: SegmentationDataset


def prepare_partition(config: RunConfig) -> tuple[Partition, np.ndarray, list[str], Any, Any]:
    """Datasets, label histograms and the seeded partition (centralised: one client)."""
    train, evaluation = build_datasets(config)
    hist = label_histograms(train, config.features.label_size)
    groups = [train.group(i) for i in range(len(train))]
    strategy_name = config.federation.strategy["name"]
    from fuss_ray.federation.strategies import STRATEGIES

    partition = make_partition(config.partition, hist, groups, config.seed)
    if STRATEGIES[strategy_name].pooled:
        partition = Partition([np.arange(len(train), dtype=np.int64)])
    ids = [train.image_id(i) for i in range(len(train))]
    return partition, hist, ids, train, evaluation


def prepare(config: RunConfig, show_progress: bool = True) -> Prepared:
    partition, hist, ids, train, evaluation = prepare_partition(config)
    train_store = ensure_features(config.features, train, "train", show_progress)
    eval_store = ensure_features(config.features, evaluation, "eval", show_progress)
    return Prepared(partition, hist, ids, train_store, eval_store, evaluation)


def pooled_config(config: RunConfig) -> RunConfig:
    """Centralised training gets the federation's compute: K x local_steps per round.

    Otherwise the "upper reference" would train on 1/K of the gradient steps that the
    federated runs spend, and compare unfairly in the other direction.
    """
    steps = config.train.local_steps * config.partition.num_clients
    train = config.train.model_copy(update={"local_steps": steps})
    return config.model_copy(update={"train": train})


def host_spec(config: RunConfig, prepared: Prepared, strategy: Strategy) -> HostSpec:
    """What every client host needs: the config, the cache, its clients' images."""
    return HostSpec(
        config=config.to_dict(),
        store_path=str(prepared.train_store.path),
        clients={cid: idx.tolist() for cid, idx in enumerate(prepared.partition.clients)},
        objective=strategy.local_objective(),
        federated=strategy.federated,
    )


def initial_state(config: RunConfig, in_dim: int) -> ModelState:
    """The state every client starts from: seeded, identical for all clients."""
    torch.manual_seed(config.seed)
    return model_state(build_model(config, in_dim))


def make_executor(config: RunConfig, spec: HostSpec) -> Executor:
    if config.federation.executor == "sequential":
        return SequentialExecutor(spec)
    return RayExecutor(spec, config.federation)


def run_simulation(
    config: RunConfig,
    out_dir: Path,
    show_progress: bool = True,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Run every round, track it, and write `summary.json` and the artifacts.

    `on_round` receives each round's summary (Ray Tune reports through it);
    `parent_run_id` nests the MLflow run under a search's parent run.
    """
    torch.set_num_threads(1)
    prepared = prepare(config, show_progress)
    fed = config.federation
    strategy = build_strategy(
        fed.strategy,
        config.seed,
        fed.server_lr,
        fed.server_momentum,
        fed.head_aggregation,
        fed.trim_fraction,
    )
    if strategy.pooled:
        config = pooled_config(config)
    write_manifest(
        out_dir / "partition.parquet", prepared.partition, prepared.image_ids, prepared.histograms
    )
    spec = host_spec(config, prepared, strategy)
    initial = initial_state(config, prepared.train_store.feature_dim)
    model = build_model(config, prepared.train_store.feature_dim)
    num_classes = config.data.num_classes
    labels = np.stack([prepared.eval_store.label(i) for i in range(len(prepared.eval_store))])
    random_ref = random_assignment_scores(labels, num_classes, config.num_centroids, config.seed)
    initial_ref = evaluate_state(model, initial, prepared.eval_store, num_classes)

    tracker = make_tracker(config, out_dir, parent_run_id, run_name)
    executor = make_executor(config, spec)
    server = Server(
        config, strategy, executor, list(spec.clients), prepared.eval_store, model, initial
    )
    tracker.start(config, prepared.partition.num_clients)
    rounds: list[dict[str, Any]] = []
    last = None
    started = time.perf_counter()
    status = "KILLED"  # stopped from outside (Ctrl-C, an early-stopping scheduler)
    try:
        with progress_bar(f"{strategy.name} rounds", config.train.rounds, show_progress) as advance:
            for r in range(1, config.train.rounds + 1):
                last = server.run_round(r)
                rounds.append(last.summary())
                tracker.log_metrics(last.metrics(), step=r)
                # The last round is reported only once the run is fully recorded, since
                # a scheduler may stop the trial the moment it hears of it.
                if on_round is not None and r < config.train.rounds:
                    on_round(last.summary())
                advance(1, miou=f"{last.miou:.1f}", loss=f"{last.mean_loss:.3f}")
        status = "FINISHED"
    except Exception:
        status = "FAILED"
        raise
    finally:
        executor.shutdown()
        if status != "FINISHED":
            tracker.finish(status)
    assert last is not None
    final: dict[str, Any] = {"miou": last.miou, "pixel_acc": last.pixel_acc}
    if last.per_client:
        final["per_client"] = last.per_client
    summary = {
        "strategy": strategy.name,
        "num_clients": prepared.partition.num_clients,
        "seed": config.seed,
        "rounds": rounds,
        "final": final,
        "reference": {
            "random_assignment": {"miou": random_ref["miou"], "pixel_acc": random_ref["pixel_acc"]},
            "initial_model": {"miou": initial_ref["miou"], "pixel_acc": initial_ref["pixel_acc"]},
        },
        "clients_per_round": len(server.sample(1)),
        "client_sizes": prepared.partition.sizes(),
        "wall_seconds": time.perf_counter() - started,
        "mlflow_run_id": tracker.run_id,
        "config": config.to_dict(),
    }
    artifacts = write_artifacts(out_dir, config, summary, server, prepared)
    tracker.log_metrics(
        {"final_miou": last.miou, "final_pixel_acc": last.pixel_acc}, step=config.train.rounds
    )
    for path in artifacts:
        tracker.log_artifact(path)
    write_json(out_dir / "summary.json", summary)
    tracker.log_artifact(out_dir / "summary.json")
    tracker.finish("FINISHED")
    if on_round is not None:
        on_round(last.summary())
    return summary
