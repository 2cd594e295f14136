"""Finishing a run: final scores and variants, the budget, artifacts, `summary.json`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fuss_ray.config import RunConfig
from fuss_ray.federation.server import RoundResult
from fuss_ray.federation.server_actor import RoundLoop, ServerView
from fuss_ray.io import write_json
from fuss_ray.simulation.prepare import (
    Prepared,
)
from fuss_ray.simulation.rounds import (
    Progress,
)
from fuss_ray.simulation.setup import Setup
from fuss_ray.tracking.artifacts import ArtifactInputs, write_artifacts
from fuss_ray.tracking.mlflow_tracker import Tracker


def client_rows(
    server: ServerView, prepared: Prepared, final: dict[str, Any]
) -> list[dict[str, Any]]:
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


def training_budget(config: RunConfig, server: ServerView) -> dict[str, Any]:
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
    budget.update(server.budget)
    return budget


def final_scores(
    last: RoundResult, server: ServerView
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]:
    """The test split's final scores (None when the run has none), the validation split's,
    and the flip-TTA / CRF variants."""
    final: dict[str, Any] | None = None
    if last.miou is not None:
        final = {"miou": last.miou, "pixel_acc": last.pixel_acc}
        if last.per_client:
            final["per_client"] = last.per_client
    variants = server.variants
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


@dataclass
class Collected:
    """What the driver collects from the round loop before it is shut down."""

    view: ServerView
    last: RoundResult  # the last round's scores
    at_start: list[dict[str, Any]]  # client hosts: node and clients, when they started
    at_end: list[dict[str, Any]]  # ... and at the end
    transport: str
    where: dict[str, Any]  # the loop: {actor, pid, node_id}


def collect(
    loop: RoundLoop, progress: Progress, rounds: int, at_start: list[dict[str, Any]]
) -> Collected:
    """The final state, asked of the loop while its hosts are still up."""
    last = progress.last or loop.evaluate_result(rounds)  # a run resumed after its end
    return Collected(loop.view(), last, at_start, loop.placement(), loop.transport(), loop.where())


def finish_run(
    setup: Setup,
    collected: Collected,
    tracker: Tracker,
    progress: Progress,
    timings: dict[str, float],
) -> dict[str, Any]:
    """Final scores, artifacts and `summary.json`, then the tracker's run is closed."""
    config, prepared = setup.config, setup.prepared
    server = collected.view
    final, val, variants = final_scores(collected.last, server)
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
        "clients_per_round": server.clients_per_round,
        "budget": training_budget(config, server),
        "client_sizes": prepared.partition.sizes(),
        "skipped_images": prepared.skipped,
        "actors_at_start": collected.at_start,
        "actors": collected.at_end,
        "feature_transport": collected.transport,
        "server": collected.where,  # where the round loop ran
        "wall_seconds": progress.elapsed(),
        "timings": timings,
        "resumed_from_round": setup.restored.round if setup.restored is not None else None,
        "mlflow_run_id": tracker.run_id,
        "config": config.to_dict(),
        "config_digest": setup.asked,
    }
    shown = next(iter(server.scored.values()))  # the global model, or client 0's
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
