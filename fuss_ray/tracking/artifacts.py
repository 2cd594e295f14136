"""The files every run leaves in its output folder (and uploads to MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from fuss_ray.config import RunConfig
from fuss_ray.data.base import resize_center_crop
from fuss_ray.io import atomic_path
from fuss_ray.metrics.evaluate import evaluate_state
from fuss_ray.models.head import load_model_state
from fuss_ray.tracking.plots import convergence_plot, overlay_grid

if TYPE_CHECKING:
    from fuss_ray.federation.server import Server
    from fuss_ray.simulation import Prepared


def write_artifacts(
    out_dir: Path, config: RunConfig, summary: dict[str, Any], server: Server, prepared: Prepared
) -> list[Path]:
    """Config, manifest, plots, per-client table and final state; all written atomically."""
    paths = []
    cfg_path = out_dir / "config.yaml"
    with atomic_path(cfg_path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    paths.append(cfg_path)
    paths.append(out_dir / "partition.parquet")

    plot = out_dir / "convergence.png"
    title = f"{summary['strategy']}, {summary['num_clients']} clients, seed {config.seed}"
    convergence_plot(
        summary["rounds"], title, plot, summary["reference"]["random_assignment"]["miou"]
    )
    paths.append(plot)

    if config.tracking.overlays > 0:
        paths.append(_overlays(out_dir / "overlays.png", config, server, prepared))

    per_client = {c["client_id"]: c for c in summary["final"].get("per_client", [])}
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
                "miou": per_client.get(cid, {}).get("miou", float("nan")),
            }
        )
    table = out_dir / "clients.parquet"
    with atomic_path(table) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    paths.append(table)

    state_path = out_dir / "final_state.npz"
    with atomic_path(state_path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **server.state)  # type: ignore[arg-type]
    paths.append(state_path)
    return paths


def _overlays(path: Path, config: RunConfig, server: Server, prepared: Prepared) -> Path:
    """Predicted segments of the first evaluation images, coloured by matched class."""
    store, evaluation = prepared.eval_store, prepared.evaluation
    n = min(config.tracking.overlays, len(store))
    state = server.state if server.strategy.federated else server.client_states.get(0, server.state)
    scores = evaluate_state(server.model, state, store, config.data.num_classes)
    mapping = scores["mapping"]
    lookup = np.full(config.num_centroids, 255, dtype=np.int64)
    for cluster, cls in mapping.items():
        lookup[cluster] = cls
    load_model_state(server.model, state)
    side = int(store.meta["label_size"])
    idx = np.arange(n)
    device = server.model.centroids.device
    with torch.no_grad():
        features = torch.from_numpy(store.gather(idx)).to(device)
        pred = server.model.predict(features, size=side).cpu().numpy()
    images = [resize_center_crop(evaluation.image(i), side) for i in range(n)]
    truths = [store.label(i) for i in range(n)]
    overlay_grid(images, truths, [lookup[p] for p in pred], path)
    return path
