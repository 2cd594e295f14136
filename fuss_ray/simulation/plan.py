"""`--dry-run`: what a run would read, cache and train, without training."""

from __future__ import annotations

import numpy as np

from fuss_ray.config import RunConfig
from fuss_ray.federation.server import clients_per_round
from fuss_ray.federation.strategies import strategy_for
from fuss_ray.simulation.prepare import (
    prepare_partition,
    shaped_config,
)


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
    folder = data.root_path()
    root = f" at {folder}" if folder is not None else ""
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
    lines.append(f"runs on: {placement_line(config, len(sizes))}")
    lines.extend(evaluation_lines(config))
    return lines


def placement_line(config: RunConfig, num_clients: int) -> str:
    """Where the clients and the round loop will run, as the plan says it."""
    fed = config.federation
    if fed.executor == "sequential":
        return "this process (sequential executor: every client and the rounds)"
    hosts = -(-num_clients // fed.clients_per_actor)
    gpus = f" + {fed.num_gpus:g} GPU" if fed.num_gpus else ""
    line = f"Ray: {hosts} client actor(s) of up to {fed.clients_per_actor} clients, " + (
        f"{fed.num_cpus:g} CPU{gpus} each"
    )
    server = fed.server
    if not server.actor:
        return line + "; the rounds in the driver"
    where = (
        f"node {server.node}"
        if server.node
        else ("a node with " + ", ".join(server.resources))
        if server.resources
        else "the head node"
    )
    return line + f"; the rounds in a server actor ({server.num_cpus:g} CPU, {where})"


def evaluation_lines(config: RunConfig) -> list[str]:
    """The test-time extras the final scores are also reported with (if any)."""
    ev = config.evaluation
    extras = [n for n, on in (("flip", ev.flip_tta), ("crf", ev.crf)) if on]
    if not extras:
        return []
    return [f"evaluation: final scores reported plain and with {' and '.join(extras)}"]
