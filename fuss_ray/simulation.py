"""One simulation end to end: data -> partition -> features -> clients -> server -> results.

Everything that can fail because of the user's input (config, dataset, paths) is checked
before any actor starts or any file is written to the output folder.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fuss_ray.config import RunConfig, first_difference
from fuss_ray.data.base import SegmentationDataset, build_datasets, label_histograms
from fuss_ray.data.partition import Partition, make_partition, write_manifest
from fuss_ray.errors import UserError
from fuss_ray.features.cache import FeatureStore, ensure_features
from fuss_ray.federation.checkpoint import Checkpoint, CheckpointWriter, latest_checkpoint
from fuss_ray.federation.client import HostSpec, build_model
from fuss_ray.federation.executor import Executor, RayExecutor, SequentialExecutor
from fuss_ray.federation.memory import check_memory, estimate_memory, host_count, memory_limit
from fuss_ray.federation.server import Server, clients_per_round, state_bytes
from fuss_ray.federation.strategies import Strategy, build_strategy
from fuss_ray.io import sweep_temporaries, write_json
from fuss_ray.metrics.evaluate import evaluate_state, evaluate_variants
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
    skipped: list[str]  # unreadable input files left out, "path: reason"


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
    if config.features.mode == "online":
        from fuss_ray.features.online import online_descriptor

        train_store = FeatureStore.open(online_descriptor(config.features, train))
    else:
        train_store = ensure_features(config.features, train, "train", show_progress)
    eval_store = ensure_features(
        config.features, evaluation, "eval", show_progress, **eval_extras(config)
    )
    skipped = [*train.skipped, *evaluation.skipped]
    return Prepared(partition, hist, ids, train_store, eval_store, evaluation, skipped)


def eval_extras(config: RunConfig) -> dict[str, bool]:
    """What the evaluation cache must hold for the configured test-time options."""
    return {"flipped": config.evaluation.flip_tta, "images": config.evaluation.crf}


def final_variants(config: RunConfig, server: Server, store: FeatureStore) -> dict[str, Any]:
    """Final scores with and without flip TTA and CRF (only those enabled; global model).

    Local-only training has no single model to refine, so it reports the plain scores only.
    """
    ev = config.evaluation
    if not (ev.flip_tta or ev.crf) or not server.strategy.federated:
        return {}
    return evaluate_variants(
        server.model,
        server.state,
        store,
        config.data.num_classes,
        flip=ev.flip_tta,
        crf_iterations=ev.crf_iterations if ev.crf else None,
    )


def pooled_config(config: RunConfig) -> RunConfig:
    """Centralised training gets the federation's compute: K x local_steps per round.

    Otherwise the "upper reference" would train on 1/K of the gradient steps that the
    federated runs spend, and compare unfairly in the other direction.
    """
    steps = config.train.local_steps * config.partition.num_clients
    train = config.train.model_copy(update={"local_steps": steps})
    return config.model_copy(update={"train": train})


def host_spec(
    config: RunConfig, prepared: Prepared, strategy: Strategy, restore_dir: Path | None = None
) -> HostSpec:
    """What every client host needs: the config, the cache, its clients' images."""
    return HostSpec(
        config=config.to_dict(),
        store_path=str(prepared.train_store.path),
        clients={cid: idx.tolist() for cid, idx in enumerate(prepared.partition.clients)},
        objective=strategy.local_objective(),
        federated=strategy.federated,
        restore_dir=str(restore_dir.resolve()) if restore_dir is not None else None,
    )


def checkpoint_to_resume(config: RunConfig, out_dir: Path) -> Checkpoint:
    """The checkpoint a `--resume` continues from, refused if it belongs to another config."""
    ckpt = latest_checkpoint(out_dir / "checkpoints")
    if ckpt is None:
        raise UserError(f"--resume {out_dir}: no checkpoint there to resume from")
    diff = first_difference(ckpt.meta["outcome_config"], config.outcome_dict())
    if diff is not None:
        raise UserError(
            f"--resume {out_dir}: the config differs from the one this run started with ({diff})"
        )
    if ckpt.round >= config.train.rounds and (out_dir / "summary.json").is_file():
        raise UserError(f"--resume {out_dir}: this run already finished (summary.json)")
    return ckpt


def initial_state(config: RunConfig, in_dim: int) -> ModelState:
    """The state every client starts from: seeded, identical for all clients."""
    torch.manual_seed(config.seed)
    return model_state(build_model(config, in_dim))


def save_checkpoint(
    writer: CheckpointWriter,
    server_round: int,
    server: Server,
    executor: Executor,
    config: RunConfig,
    rounds: list[dict[str, Any]],
    tracker: Any,
    elapsed: float,
) -> Checkpoint:
    """Hosts write their clients' state, then the server's part publishes the folder."""
    staging = writer.staging(server_round)
    client_files = executor.save_clients(staging)
    arrays, server_meta = server.export()
    meta = {
        "config": config.to_dict(),
        "outcome_config": config.outcome_dict(),
        "config_digest": config.digest(),
        "mlflow_run_id": tracker.run_id,
        "server": server_meta,
        "rounds": rounds,
        "elapsed_seconds": elapsed,
        "client_files": {str(c): f for c, f in client_files.items()},
    }
    return writer.publish(staging, server_round, arrays, meta)


def check_fits(config: RunConfig, spec: HostSpec, state: ModelState, eval_images: int) -> None:
    """Refuse a run that would not fit in memory, before any actor starts."""
    import os

    fed = config.federation
    starts_ray = False
    if fed.executor == "ray" and not (fed.ray_address or os.environ.get("RAY_ADDRESS")):
        import ray

        starts_ray = not ray.is_initialized()
    hosts = host_count(config, len(spec.clients))
    estimate = estimate_memory(config, spec, hosts, state_bytes(state), eval_images, starts_ray)
    check_memory(estimate, *memory_limit(config))


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
    resume: bool = False,
) -> dict[str, Any]:
    """Run every round, track it, and write `summary.json` and the artifacts.

    `on_round` receives each round's summary (Ray Tune reports through it);
    `parent_run_id` nests the MLflow run under a search's parent run. With `resume`, the
    run continues from the newest checkpoint in `out_dir` (and in the same MLflow run).
    """
    torch.set_num_threads(1)
    asked = config.digest()  # before any rule adjusts it (centralised training's steps)
    ckpt_root = out_dir / "checkpoints"
    restored = checkpoint_to_resume(config, out_dir) if resume else None
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
    if out_dir.is_dir():
        sweep_temporaries(out_dir)  # left by a run of this folder that was killed mid-write
    write_manifest(
        out_dir / "partition.parquet", prepared.partition, prepared.image_ids, prepared.histograms
    )
    if restored is None and ckpt_root.exists():
        shutil.rmtree(ckpt_root)  # a fresh run must never restore another run's clients
    spec = host_spec(config, prepared, strategy, ckpt_root)
    initial = initial_state(config, prepared.train_store.feature_dim)
    model = build_model(config, prepared.train_store.feature_dim)
    num_classes = config.data.num_classes
    labels = np.stack([prepared.eval_store.label(i) for i in range(len(prepared.eval_store))])
    random_ref = random_assignment_scores(labels, num_classes, config.num_centroids, config.seed)
    initial_ref = evaluate_state(model, initial, prepared.eval_store, num_classes)

    check_fits(config, spec, initial, len(prepared.eval_store))
    tracker = make_tracker(config, out_dir, parent_run_id, run_name)
    executor = make_executor(config, spec)
    server = Server(
        config, strategy, executor, list(spec.clients), prepared.eval_store, model, initial
    )
    placement_at_start = executor.placement() if isinstance(executor, RayExecutor) else []
    rounds: list[dict[str, Any]] = []
    first_round, elapsed_before = 1, 0.0
    logged: set[int] = set()
    if restored is not None:
        server.restore(restored.server_tree(), restored.meta["server"])
        rounds = list(restored.meta["rounds"])
        first_round = restored.round + 1
        elapsed_before = float(restored.meta["elapsed_seconds"])
        logged = tracker.resume(restored.meta["mlflow_run_id"], config, len(spec.clients))
    else:
        tracker.start(config, prepared.partition.num_clients)
    writer = CheckpointWriter(ckpt_root, config.checkpoint.keep)
    last = None
    started = time.perf_counter()
    status = "KILLED"  # stopped from outside (Ctrl-C, an early-stopping scheduler)
    try:
        with progress_bar(f"{strategy.name} rounds", config.train.rounds, show_progress) as advance:
            advance(first_round - 1)
            for r in range(first_round, config.train.rounds + 1):
                last = server.run_round(r)
                rounds.append(last.summary())
                if r not in logged:  # a resumed round may have been logged before the kill
                    tracker.log_metrics(last.metrics(), step=r)
                every = config.checkpoint.every
                if every and (r % every == 0 or r == config.train.rounds):
                    elapsed = elapsed_before + time.perf_counter() - started
                    save_checkpoint(writer, r, server, executor, config, rounds, tracker, elapsed)
                # The last round is reported only once the run is fully recorded, since
                # a scheduler may stop the trial the moment it hears of it.
                if on_round is not None and r < config.train.rounds:
                    on_round(last.summary())
                advance(1, miou=f"{last.miou:.1f}", loss=f"{last.mean_loss:.3f}")
        placement = executor.placement() if isinstance(executor, RayExecutor) else []
        status = "FINISHED"
    except Exception:
        status = "FAILED"
        raise
    finally:
        executor.shutdown()
        if status != "FINISHED":
            tracker.finish(status)
    if last is None:  # resumed after the last round's checkpoint: evaluate what it holds
        last = server.evaluate_result(config.train.rounds)
    final: dict[str, Any] = {"miou": last.miou, "pixel_acc": last.pixel_acc}
    if last.per_client:
        final["per_client"] = last.per_client
    variants = final_variants(config, server, prepared.eval_store)
    if variants:
        final["variants"] = variants
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
        "skipped_images": prepared.skipped,
        "actors_at_start": placement_at_start,
        "actors": placement,
        "feature_transport": getattr(executor, "transport", "path"),
        "wall_seconds": elapsed_before + time.perf_counter() - started,
        "resumed_from_round": restored.round if restored is not None else None,
        "mlflow_run_id": tracker.run_id,
        "config": config.to_dict(),
        "config_digest": asked,
    }
    artifacts = write_artifacts(out_dir, config, summary, server, prepared)
    final_metrics = {"final_miou": last.miou, "final_pixel_acc": last.pixel_acc}
    for name, scores in variants.items():
        if name != "plain":
            key = name.replace("+", "_")
            final_metrics[f"final_miou_{key}"] = scores["miou"]
            final_metrics[f"final_pixel_acc_{key}"] = scores["pixel_acc"]
    tracker.log_metrics(final_metrics, step=config.train.rounds)
    for path in artifacts:
        tracker.log_artifact(path)
    write_json(out_dir / "summary.json", summary)
    tracker.log_artifact(out_dir / "summary.json")
    tracker.finish("FINISHED")
    if on_round is not None:
        on_round(last.summary())
    return summary


def _size(n_bytes: float) -> str:
    if n_bytes < 1024:
        return f"{int(n_bytes)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n_bytes /= 1024
        if n_bytes < 1024:
            return f"{n_bytes:.1f} {unit}"
    return f"{n_bytes / 1024:.1f} TiB"


def dry_run_plan(config: RunConfig) -> list[str]:
    """Check a config against the data on disk and describe the run, training nothing.

    Reads the dataset's file lists and masks (for the partition), checks that a weights
    file exists, and sizes the feature caches from the backbone's geometry: every problem a
    real run would meet before its first round surfaces here, in the same one-line form.
    """
    from fuss_ray.features.backbone import check_weights_file, feature_geometry, timm_name
    from fuss_ray.federation.strategies import STRATEGIES

    partition, _, _, train, evaluation = prepare_partition(config)
    weights = check_weights_file(config.features)
    channels, stride = feature_geometry(config.features)
    fc, data = config.features, config.data
    eval_side = fc.eval_input_size or fc.input_size
    grid, eval_grid = -(-fc.input_size // stride), -(-eval_side // stride)  # ViTs pad
    labels = fc.label_size**2
    train_bytes = len(train) * (channels * grid * grid * 4 + labels)
    copies = 2 if config.evaluation.flip_tta else 1
    eval_bytes = len(evaluation) * (
        copies * channels * eval_grid * eval_grid * 4 + labels * (4 if config.evaluation.crf else 1)
    )
    sizes = partition.sizes()
    strategy = config.federation.strategy["name"]
    per_round = clients_per_round(config.federation, len(sizes))
    steps = config.train.local_steps
    if STRATEGIES[strategy].pooled:
        steps *= config.partition.num_clients
    shown = (
        ", ".join(str(s) for s in sizes)
        if len(sizes) <= 24
        else (f"min {min(sizes)}, median {int(np.median(sizes))}, max {max(sizes)}")
    )
    root = f" at {data.root}" if data.root is not None else ""
    crops = " (five half-size crops per image)" if fc.five_crop else ""
    lines = [
        f"config: {config.name} (seed {config.seed}) is valid",
        f"data: {data.dataset}{root}: {len(train)} training images{crops}, "
        f"{len(evaluation)} evaluation images, {data.num_classes} classes",
        f"partition: {config.partition.kind}, {len(sizes)} clients; images per client: {shown}",
        f"strategy: {strategy}; {per_round} clients per round, {config.train.rounds} rounds x "
        f"{steps} local steps of batch {config.train.batch_size} "
        f"({per_round * steps * config.train.rounds} client steps in all)",
        f"backbone: {fc.backbone} ({timm_name(fc.backbone)}), weights: {weights}",
        f"features: {channels} x {grid} x {grid} per training image at {fc.input_size} px, "
        f"{channels} x {eval_grid} x {eval_grid} per evaluation image at {eval_side} px",
        f"feature cache: {_size(train_bytes)} train + {_size(eval_bytes)} eval "
        f"under {fc.cache_dir}",
    ]
    if config.evaluation.flip_tta or config.evaluation.crf:
        extras = [
            n
            for n, on in (("flip", config.evaluation.flip_tta), ("crf", config.evaluation.crf))
            if on
        ]
        lines.append(f"evaluation: final scores reported plain and with {' and '.join(extras)}")
    return lines
