"""The files every run leaves in its output folder (and uploads to MLflow)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from numpy.typing import NDArray

from fuss_ray.config import RunConfig
from fuss_ray.data.base import resize_center_crop
from fuss_ray.features.cache import FeatureStore
from fuss_ray.io import atomic_path
from fuss_ray.metrics.evaluate import evaluate_state
from fuss_ray.models.head import FussModel, ModelState, load_model_state
from fuss_ray.tracking.plots import convergence_plot, overlay_grid


@dataclass
class ArtifactInputs:
    """What a finished run's files are drawn from, as plain data."""

    client_rows: list[dict[str, Any]]  # one row of clients.parquet per client
    model: FussModel
    state: ModelState  # the model shown in the overlays and saved as final_state.npz
    eval_store: FeatureStore
    eval_image: Callable[[int], NDArray[np.uint8]]  # an evaluation image, RGB


def write_artifacts(
    out_dir: Path, config: RunConfig, summary: dict[str, Any], inputs: ArtifactInputs
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
        paths.append(_overlays(out_dir / "overlays.png", config, inputs))

    table = out_dir / "clients.parquet"
    with atomic_path(table) as tmp:
        pq.write_table(pa.Table.from_pylist(inputs.client_rows), tmp)
    paths.append(table)

    state_path = out_dir / "final_state.npz"
    with atomic_path(state_path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **inputs.state)  # type: ignore[arg-type]
    paths.append(state_path)
    return paths


def _overlays(path: Path, config: RunConfig, inputs: ArtifactInputs) -> Path:
    """Predicted segments of the first evaluation images, coloured by matched class."""
    store, model, state = inputs.eval_store, inputs.model, inputs.state
    n = min(config.tracking.overlays, len(store))
    scores = evaluate_state(model, state, store, config.data.num_classes)
    mapping = scores["mapping"]
    lookup = np.full(config.num_centroids, 255, dtype=np.int64)
    for cluster, cls in mapping.items():
        lookup[cluster] = cls
    load_model_state(model, state)
    side = int(store.meta["label_size"])
    idx = np.arange(n)
    device = model.centroids.device
    with torch.no_grad():
        features = torch.from_numpy(store.gather(idx)).to(device)
        pred = model.predict(features, size=side).cpu().numpy()
    images = [resize_center_crop(inputs.eval_image(i), side) for i in range(n)]
    truths = [store.label(i) for i in range(n)]
    overlay_grid(images, truths, [lookup[p] for p in pred], path)
    return path
