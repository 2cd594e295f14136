"""The round loop: start or resume, one round at a time, checkpoints and tracking."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fuss_ray.config import RunConfig
from fuss_ray.federation.server import RoundResult
from fuss_ray.federation.server_actor import RoundLoop
from fuss_ray.progress import progress_bar
from fuss_ray.simulation.prepare import (
    Prepared,
)
from fuss_ray.simulation.setup import Setup
from fuss_ray.tracking.mlflow_tracker import DatasetInfo, Tracker


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
    folder = data.root_path()
    source = str(folder) if folder is not None else f"{data.dataset} (seed {config.seed})"
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


def start_or_resume(setup: Setup, loop: RoundLoop, tracker: Tracker) -> Progress:
    """Fresh: start the MLflow run. Resumed: restore the server and reopen the same run."""
    ckpt = setup.restored
    if ckpt is None:
        info = dataset_info(setup.config, setup.prepared)
        tracker.start(setup.config, setup.prepared.partition.num_clients, info)
        return Progress([], 1, 0.0, set())
    loop.restore(ckpt)
    logged = tracker.resume(ckpt.meta["mlflow_run_id"], setup.config, len(setup.spec.clients))
    return Progress(
        list(ckpt.meta["rounds"]), ckpt.round + 1, float(ckpt.meta["elapsed_seconds"]), logged
    )


def save_checkpoint(
    loop: RoundLoop, server_round: int, config: RunConfig, progress: Progress, tracker: Tracker
) -> None:
    """The driver's part of the checkpoint (config, MLflow run, rounds so far); the loop
    adds the server's and the hosts' state and publishes the folder."""
    meta = {
        "config": config.to_dict(),
        "outcome_config": config.outcome_dict(),
        "config_digest": config.digest(),
        "mlflow_run_id": tracker.run_id,
        "rounds": progress.rounds,
        "elapsed_seconds": progress.elapsed(),
    }
    loop.checkpoint(server_round, meta)


def run_rounds(
    setup: Setup,
    loop: RoundLoop,
    tracker: Tracker,
    progress: Progress,
    on_round: Callable[[dict[str, Any]], None] | None,
    show_progress: bool,
) -> None:
    """Every remaining round: train, aggregate, evaluate, log, checkpoint, report."""
    config = setup.config
    every = config.checkpoint.every
    label = f"{setup.strategy.name} rounds"
    with progress_bar(label, config.train.rounds, show_progress) as advance:
        advance(progress.first_round - 1)
        for r in range(progress.first_round, config.train.rounds + 1):
            last = progress.last = loop.run_round(r)
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
                save_checkpoint(loop, r, config, progress, tracker)
            # The last round is reported only once the run is fully recorded, since a
            # scheduler may stop the trial the moment it hears of it.
            if on_round is not None and r < config.train.rounds:
                on_round(last.summary())
            shown = last.miou if last.miou is not None else last.val_miou
            advance(1, miou=f"{shown or 0:.1f}", loss=f"{last.mean_loss:.3f}")
