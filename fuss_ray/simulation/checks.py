"""Checks that fail a run in one line before any actor starts: a resume that cannot
continue, an asynchronous run that cannot mean anything, a run that does not fit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fuss_ray.config import RunConfig, earlier_layout, first_difference
from fuss_ray.errors import UserError
from fuss_ray.federation.arrivals import state_bytes
from fuss_ray.federation.checkpoint import Checkpoint, latest_checkpoint
from fuss_ray.federation.client import HostSpec
from fuss_ray.federation.memory import check_memory, estimate_memory, host_count, memory_limit
from fuss_ray.federation.strategies import Strategy, async_strategies
from fuss_ray.models.head import ModelState
from fuss_ray.simulation.prepare import (
    simulated_clients,
)

log = logging.getLogger(__name__)


def checkpoint_to_resume(config: RunConfig, out_dir: Path) -> Checkpoint:
    """The checkpoint a `--resume` continues from, refused if it belongs to another config."""
    ckpt = latest_checkpoint(out_dir / "checkpoints")
    if ckpt is None:
        raise UserError(f"--resume {out_dir}: no checkpoint there to resume from")
    stored, asked = ckpt.meta["outcome_config"], config.outcome_dict()
    diff = first_difference(earlier_layout(stored), earlier_layout(asked))
    if diff is not None:
        raise UserError(
            f"--resume {out_dir}: the config differs from the one this run started with ({diff})"
        )
    if ckpt.round >= config.train.rounds and (out_dir / "summary.json").is_file():
        raise UserError(f"--resume {out_dir}: this run already finished (summary.json)")
    return ckpt


def check_client_batch(config: RunConfig, strategy: Strategy[Any]) -> None:
    """Say once that a strategy whose client objective has no stacked form trains its
    clients one at a time, whatever `federation.client_batch` asks (the hosts do so)."""
    g = config.federation.client_batch
    objective = strategy.client_objective()
    if objective.stack_size(g) < g:
        log.warning(
            "federation.client_batch: %d, but strategy '%s' has a client objective (%s) "
            "without stacked hooks; its clients train one at a time",
            g,
            strategy.name,
            type(objective).__name__,
        )


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
    from fuss_ray.federation.server_actor import uses_server_actor

    hosts = host_count(config, len(spec.clients))
    estimate = estimate_memory(
        config, spec, hosts, state_bytes(state), eval_images, starts_ray, uses_server_actor(fed)
    )
    check_memory(estimate, *memory_limit(config))
