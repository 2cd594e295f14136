"""One simulation end to end: data -> partition -> features -> clients -> server -> results.

Everything that can fail because of the user's input (config, dataset, paths) is checked
before any actor starts or any file is written to the output folder. By job: `prepare`
(datasets, partition, features, host descriptors), `checks` (one-line refusals),
`setup` (everything built before the first round), `rounds` (the round loop,
checkpoints, tracking), `finish` (final scores, artifacts, `summary.json`) and `plan`
(`--dry-run`); `run_simulation` ties them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fuss_ray.config import RunConfig
from fuss_ray.federation.server_actor import make_loop
from fuss_ray.simulation.checks import check_async, check_fits, checkpoint_to_resume
from fuss_ray.simulation.finish import collect, finish_run, training_budget
from fuss_ray.simulation.plan import dry_run_plan
from fuss_ray.simulation.prepare import (
    Prepared,
    eval_extras,
    host_spec,
    initial_state,
    prepare,
    prepare_partition,
    shaped_config,
    simulated_clients,
)
from fuss_ray.simulation.rounds import Progress, run_rounds, start_or_resume
from fuss_ray.simulation.setup import Setup, server_parts, set_up
from fuss_ray.tracking import make_tracker

__all__ = [
    "Prepared",
    "Progress",
    "Setup",
    "check_async",
    "check_fits",
    "checkpoint_to_resume",
    "dry_run_plan",
    "eval_extras",
    "host_spec",
    "initial_state",
    "make_loop",
    "prepare",
    "prepare_partition",
    "run_simulation",
    "server_parts",
    "set_up",
    "shaped_config",
    "simulated_clients",
    "training_budget",
]


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
    # The round loop: a server actor on the cluster, or this process (see server_actor).
    loop = make_loop(server_parts(setup))
    timings["start_s"] = time.perf_counter() - clock  # hosts (actors) up and ready
    status = "KILLED"  # stopped from outside (Ctrl-C, an early-stopping scheduler)
    try:
        at_start = loop.placement()
        progress = start_or_resume(setup, loop, tracker)
        run_rounds(setup, loop, tracker, progress, on_round, show_progress)
        collected = collect(loop, progress, setup.config.train.rounds, at_start)
        status = "FINISHED"
    except Exception:
        status = "FAILED"
        raise
    finally:
        loop.shutdown(wait=status == "FINISHED")  # Ctrl-C does not wait for the round
        if status != "FINISHED":
            tracker.finish(status)
    timings["rounds_s"] = progress.elapsed() - progress.elapsed_before
    summary = finish_run(setup, collected, tracker, progress, timings)
    if on_round is not None and progress.last is not None:
        on_round(progress.last.summary())
    return summary
