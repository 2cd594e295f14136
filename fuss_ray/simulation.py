"""One simulation end to end: data -> partition -> features -> clients -> server -> results.

Everything that can fail because of the user's input (config, dataset, paths) is checked
before any actor starts or any file is written to the output folder.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fuss_ray.config import RunConfig, first_difference
from fuss_ray.data.base import SegmentationDataset, Splits, label_histograms
from fuss_ray.data.partition import Partition, make_partition, write_manifest
from fuss_ray.data.splits import build_datasets
from fuss_ray.errors import UserError
from fuss_ray.features.cache import FeatureStore, ensure_features
from fuss_ray.federation.checkpoint import Checkpoint, CheckpointWriter, latest_checkpoint
from fuss_ray.federation.client import HostSpec, build_model
from fuss_ray.federation.executor import Executor, RayExecutor, SequentialExecutor
from fuss_ray.federation.fedbuff import AsyncServer
from fuss_ray.federation.memory import check_memory, estimate_memory, host_count, memory_limit
from fuss_ray.federation.server import RoundResult, Server, clients_per_round, state_bytes
from fuss_ray.federation.strategies import Strategy, async_strategies, strategy_for
from fuss_ray.io import sweep_temporaries, write_json
from fuss_ray.metrics.evaluate import evaluate_state, evaluate_variants
from fuss_ray.metrics.segmentation import random_assignment_scores
from fuss_ray.models.head import FussModel, ModelState, model_state
from fuss_ray.progress import progress_bar
from fuss_ray.tracking import make_tracker
from fuss_ray.tracking.artifacts import ArtifactInputs, write_artifacts
from fuss_ray.tracking.mlflow_tracker import DatasetInfo, Tracker


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
    """The run as its strategy trains it (`Strategy.shape_run`: centralised training's
    step budget); what `summary.json` and the round loop see."""
    return strategy_for(config).shape_run(config)


def simulated_clients(config: RunConfig) -> int:
    """How many clients the run holds (`Strategy.shape_partition`: one for centralised
    training), without reading any data."""
    k = config.partition.num_clients
    sizes = strategy_for(config).shape_partition(Partition([np.zeros(0, np.int64)] * k), 0)
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
    partition = strategy_for(config).shape_partition(partition, len(train))
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


def final_variants(config: RunConfig, server: Server, store: FeatureStore | None) -> dict[str, Any]:
    """Final scores with and without flip TTA and CRF (only those enabled; global model).

    Local-only training has no single model to refine, so it reports the plain scores only.
    """
    ev = config.evaluation
    models = server.scored_models()
    if not (ev.flip_tta or ev.crf) or None not in models or store is None:
        return {}
    return evaluate_variants(
        server.model,
        models[None],
        store,
        config.data.num_classes,
        flip=ev.flip_tta,
        crf_iterations=ev.crf_iterations if ev.crf else None,
    )


def host_spec(config: RunConfig, prepared: Prepared, restore_dir: Path | None = None) -> HostSpec:
    """What every client host needs: the config, the cache, its clients' images."""
    return HostSpec(
        config=config.to_dict(),
        store_path=str(prepared.train_store.path),
        clients={cid: idx.tolist() for cid, idx in enumerate(prepared.partition.clients)},
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


def check_async(config: RunConfig, strategy: Strategy[Any]) -> None:
    """Refuse, in one line, an asynchronous run that cannot mean anything."""
    fed, systems = config.federation, config.systems
    if fed.mode != "async":
        return
    if not strategy.runs_asynchronously():
        have = ", ".join(async_strategies())
        raise UserError(
            f"federation.mode: async: strategy '{strategy.name}' has no asynchronous form "
            f"({have} have)"
        )
    if fed.head_aggregation != "mean":
        raise UserError(
            "federation.head_aggregation: async buffers are averaged; median and "
            "trimmed_mean are for synchronous rounds"
        )
    if systems.deadline_s is not None or systems.over_commit != 1.0:
        raise UserError(
            "systems.deadline_s / over_commit: an asynchronous server waits for no round; "
            "leave them unset (fedbuff.concurrency and buffer_size set the pace)"
        )
    if fed.fedbuff.concurrency > simulated_clients(config):
        raise UserError(
            f"federation.fedbuff.concurrency: {fed.fedbuff.concurrency} clients at once, but "
            f"the run has {simulated_clients(config)}"
        )


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
    config = strategy.shape_run(config)
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


@dataclass
class Progress:
    """Where the rounds stand: what has been recorded, and since when the run has worked."""

    rounds: list[dict[str, Any]]
    first_round: int
    elapsed_before: float  # seconds spent before a resume
    logged: set[int]  # rounds MLflow already holds (a resume may repeat one)
    started: float = field(default_factory=time.perf_counter)
    last: RoundResult | None = None

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started


def dataset_info(config: RunConfig, prepared: Prepared) -> DatasetInfo:
    """The run's data as MLflow shows it: what, split how, from where; its digest changes
    with the images, the validation carve-out and the partition."""
    part, data = config.partition, config.data
    skew = f" α={part.alpha:g}" if part.kind in ("dirichlet", "quantity") else ""
    clients = prepared.partition.num_clients
    h = hashlib.sha256(str(prepared.train_store.meta.get("dataset_fingerprint")).encode())
    for idx in prepared.partition.clients:
        h.update(np.asarray(idx, dtype=np.int64).tobytes() + b"|")
    source = str(data.root) if data.root is not None else f"{data.dataset} (seed {config.seed})"
    return DatasetInfo(
        name=f"{data.dataset} · {part.kind}{skew} · {clients} clients",
        digest=h.hexdigest()[:16],
        source=source,
        profile={
            "train_images": len(prepared.train_store),
            "validation_images": len(prepared.val_store) if prepared.val_store else 0,
            "test_images": len(prepared.evaluation),
            "clients": clients,
            "classes": data.num_classes,
        },
    )


def start_or_resume(setup: Setup, server: Server, tracker: Tracker) -> Progress:
    """Fresh: start the MLflow run. Resumed: restore the server and reopen the same run."""
    ckpt = setup.restored
    if ckpt is None:
        info = dataset_info(setup.config, setup.prepared)
        tracker.start(setup.config, setup.prepared.partition.num_clients, info)
        return Progress([], 1, 0.0, set())
    server.restore(ckpt.server_tree(), ckpt.meta["server"])
    logged = tracker.resume(ckpt.meta["mlflow_run_id"], setup.config, len(setup.spec.clients))
    return Progress(
        list(ckpt.meta["rounds"]), ckpt.round + 1, float(ckpt.meta["elapsed_seconds"]), logged
    )


def save_checkpoint(
    writer: CheckpointWriter,
    server_round: int,
    server: Server,
    config: RunConfig,
    progress: Progress,
    tracker: Tracker,
) -> Checkpoint:
    """Hosts write their clients' state, then the server's part publishes the folder."""
    staging = writer.staging(server_round)
    # The server's part first: an asynchronous server may still train clients for it,
    # and the hosts must then save their clients' state as that training left it.
    arrays, server_meta = server.export()
    client_files = server.executor.save_clients(staging)
    meta = {
        "config": config.to_dict(),
        "outcome_config": config.outcome_dict(),
        "config_digest": config.digest(),
        "mlflow_run_id": tracker.run_id,
        "server": server_meta,
        "rounds": progress.rounds,
        "elapsed_seconds": progress.elapsed(),
        "client_files": {str(c): f for c, f in client_files.items()},
    }
    return writer.publish(staging, server_round, arrays, meta)


def run_rounds(
    setup: Setup,
    server: Server,
    tracker: Tracker,
    progress: Progress,
    on_round: Callable[[dict[str, Any]], None] | None,
    show_progress: bool,
) -> None:
    """Every remaining round: train, aggregate, evaluate, log, checkpoint, report."""
    config = setup.config
    writer = CheckpointWriter(setup.out_dir / "checkpoints", config.checkpoint.keep)
    every = config.checkpoint.every
    label = f"{setup.strategy.name} rounds"
    with progress_bar(label, config.train.rounds, show_progress) as advance:
        advance(progress.first_round - 1)
        for r in range(progress.first_round, config.train.rounds + 1):
            last = progress.last = server.run_round(r)
            progress.rounds.append(last.summary())
            if r not in progress.logged:  # a resumed round may have been logged before
                tracker.log_metrics(last.metrics(), step=r)
                if last.asynchrony is not None and last.sim_clock_s is not None:
                    # The same scores against the simulated clock (seconds as the step).
                    by_clock = {"miou": last.miou, "val_miou": last.val_miou}
                    tracker.log_metrics(
                        {f"{k}_by_sim_s": v for k, v in by_clock.items() if v is not None},
                        step=round(last.sim_clock_s),
                    )
            if every and (r % every == 0 or r == config.train.rounds):
                save_checkpoint(writer, r, server, config, progress, tracker)
            # The last round is reported only once the run is fully recorded, since a
            # scheduler may stop the trial the moment it hears of it.
            if on_round is not None and r < config.train.rounds:
                on_round(last.summary())
            shown = last.miou if last.miou is not None else last.val_miou
            advance(1, miou=f"{shown or 0:.1f}", loss=f"{last.mean_loss:.3f}")


def client_rows(server: Server, prepared: Prepared, final: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per client for `clients.parquet`: its data, its participation, its score."""
    scores = {c["client_id"]: c for c in final.get("per_client", [])}
    rows = []
    for cid, idx in enumerate(prepared.partition.clients):
        hist = prepared.histograms[idx].sum(axis=0)
        rows.append(
            {
                "client_id": cid,
                "num_images": len(idx),
                "dominant_class": int(hist.argmax()),
                "dominant_share": float(hist.max() / max(1, hist.sum())),
                "rounds_participated": server.participation.get(cid, 0),
                "last_loss": server.last_loss.get(cid, float("nan")),
                "miou": scores.get(cid, {}).get("miou", float("nan")),
            }
        )
    return rows


def training_budget(config: RunConfig, server: Server) -> dict[str, Any]:
    """The gradient steps behind a run's scores, so that comparisons can name them.

    `model_steps`: steps taken by the model that is scored (rounds x local_steps, as each
    round continues from the last); `client_steps_total`: every step any client took.
    """
    steps = config.train.local_steps
    budget: dict[str, Any] = {
        "local_steps_per_round": steps,
        "client_steps_total": int(sum(server.participation.values())) * steps,
        "model_steps": config.train.rounds * steps,
    }
    budget.update(server.strategy.budget_note())
    return budget


def final_scores(
    last: RoundResult, config: RunConfig, server: Server, prepared: Prepared
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]:
    """The test split's final scores (None when the run has none), the validation split's,
    and the flip-TTA / CRF variants."""
    final: dict[str, Any] | None = None
    if last.miou is not None:
        final = {"miou": last.miou, "pixel_acc": last.pixel_acc}
        if last.per_client:
            final["per_client"] = last.per_client
    variants = final_variants(config, server, prepared.eval_store)
    if final is not None and variants:
        final["variants"] = variants
    val: dict[str, Any] | None = None
    if last.val_miou is not None:
        val = {"miou": last.val_miou, "pixel_acc": last.val_pixel_acc}
    return final, val, variants


def final_metrics(
    final: dict[str, Any] | None, val: dict[str, Any] | None, variants: dict[str, Any]
) -> dict[str, float]:
    """The final scores as the tracker's metrics (`final_miou`, `val_final_miou`, ...)."""
    out: dict[str, float] = {}
    for prefix, scores in (("final", final), ("val_final", val)):
        if scores is not None:
            out[f"{prefix}_miou"] = scores["miou"]
            out[f"{prefix}_pixel_acc"] = scores["pixel_acc"]
    for name, scores in variants.items():
        if name != "plain":
            key = name.replace("+", "_")
            out[f"final_miou_{key}"] = scores["miou"]
            out[f"final_pixel_acc_{key}"] = scores["pixel_acc"]
    return out


def finish_run(
    setup: Setup,
    server: Server,
    tracker: Tracker,
    progress: Progress,
    placement: tuple[list[dict[str, Any]], list[dict[str, Any]], str],
    timings: dict[str, float],
) -> dict[str, Any]:
    """Final scores, artifacts and `summary.json`, then the tracker's run is closed."""
    config, prepared = setup.config, setup.prepared
    last = progress.last or server.evaluate_result(config.train.rounds)  # resumed at the end
    final, val, variants = final_scores(last, config, server, prepared)
    at_start, at_end, transport = placement
    measured = [r["alignment"] for r in progress.rounds if r.get("alignment")]
    aligned = (
        {k: float(np.mean([m[k] for m in measured])) for k in measured[0]} if measured else None
    )
    summary = {
        "strategy": setup.strategy.name,
        "num_clients": prepared.partition.num_clients,
        "seed": config.seed,
        "rounds": progress.rounds,
        "final": final,
        "val": val,
        "alignment": aligned,  # per-round centroid alignment, averaged over rounds
        "reference": setup.references,
        "clients_per_round": len(server.sample(1)),
        "budget": training_budget(config, server),
        "client_sizes": prepared.partition.sizes(),
        "skipped_images": prepared.skipped,
        "actors_at_start": at_start,
        "actors": at_end,
        "feature_transport": transport,
        "wall_seconds": progress.elapsed(),
        "timings": timings,
        "resumed_from_round": setup.restored.round if setup.restored is not None else None,
        "mlflow_run_id": tracker.run_id,
        "config": config.to_dict(),
        "config_digest": setup.asked,
    }
    shown = next(iter(server.scored_models().values()))  # the global model, or client 0's
    store, dataset = prepared.scored()
    inputs = ArtifactInputs(
        client_rows(server, prepared, final or {}),
        server.model,
        shown,
        store,
        dataset.image,
    )
    artifacts = write_artifacts(setup.out_dir, config, summary, inputs)
    tracker.log_metrics(final_metrics(final, val, variants), step=config.train.rounds)
    for path in artifacts:
        tracker.log_artifact(path)
    write_json(setup.out_dir / "summary.json", summary)
    tracker.log_artifact(setup.out_dir / "summary.json")
    tracker.finish("FINISHED")
    return summary


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
    The three steps: `set_up` (nothing runs yet), `run_rounds`, `finish_run`.
    """
    torch.set_num_threads(1)
    clock = time.perf_counter()
    setup = set_up(config, out_dir, resume, show_progress)
    timings = {"setup_s": time.perf_counter() - clock}  # data, features, checks
    tracker = make_tracker(setup.config, out_dir, parent_run_id, run_name)
    clock = time.perf_counter()
    executor = make_executor(setup.config, setup.spec)
    timings["start_s"] = time.perf_counter() - clock  # hosts (actors) up and ready
    server_type = AsyncServer if setup.config.federation.mode == "async" else Server
    server = server_type(
        setup.config,
        setup.strategy,
        executor,
        list(setup.spec.clients),
        setup.prepared.eval_store,
        setup.model,
        setup.initial,
        setup.prepared.val_store,
    )
    at_start = executor.placement()
    status = "KILLED"  # stopped from outside (Ctrl-C, an early-stopping scheduler)
    try:
        progress = start_or_resume(setup, server, tracker)
        run_rounds(setup, server, tracker, progress, on_round, show_progress)
        placement = (at_start, executor.placement(), executor.transport)
        status = "FINISHED"
    except Exception:
        status = "FAILED"
        raise
    finally:
        executor.shutdown()
        if status != "FINISHED":
            tracker.finish(status)
    timings["rounds_s"] = progress.elapsed() - progress.elapsed_before
    summary = finish_run(setup, server, tracker, progress, placement, timings)
    if on_round is not None and progress.last is not None:
        on_round(progress.last.summary())
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

    strategy_for(config)  # its settings, as a run checks them
    partition, _, _, (train, val, evaluation) = prepare_partition(config)
    weights = check_weights_file(config.features)
    channels, stride = feature_geometry(config.features)
    fc, data = config.features, config.data
    eval_side = fc.eval_input_size or fc.input_size
    grid, eval_grid = -(-fc.input_size // stride), -(-eval_side // stride)  # ViTs pad
    labels = fc.label_size**2
    width = 2 if fc.dtype == "float16" else 4
    train_bytes = len(train) * (channels * grid * grid * width + labels)
    copies = 2 if config.evaluation.flip_tta else 1
    eval_bytes = len(evaluation) * (
        copies * channels * eval_grid * eval_grid * width
        + labels * (4 if config.evaluation.crf else 1)
    )
    n_val = len(val) if val is not None else 0
    eval_bytes += n_val * (channels * eval_grid * eval_grid * width + labels)
    sizes = partition.sizes()
    strategy = config.federation.strategy["name"]
    per_round = clients_per_round(config.federation, len(sizes))
    steps = shaped_config(config).train.local_steps
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
        f"{n_val} validation images, {len(evaluation)} test images, "
        f"{data.num_classes} classes",
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
