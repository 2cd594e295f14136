"""Client steps per second: the first implementation of a local step against today's.

A local step is the simulator's unit of cost. This times, in one run, the reference step
(tests/reference_step.py: the correspondence loss term by term with `grid_sample`, draws
and reads each step) and the step that clients run now (fuss_ray.federation.steps with
the fused loss), on one torch thread as a client actor has, at the committed benchmark's
shapes and at the quickstart's, two ways:
- as hosts run them (the headline): each in a worker process of its own, the reference
  with glibc's default allocator as client hosts had it, the current one with
  `reuse_freed_memory()` as client hosts now call it;
- in one process under the same allocator (what the code alone changes).
Timed rounds of the two alternate, so load on the machine falls on both alike; figures
are medians over rounds. Both also train from the same state and the report says how far
apart they end.

    python tools/bench_step.py --json docs/bench/step.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuss_ray.federation.objective import ClientObjective, LocalRun
from fuss_ray.federation.steps import (
    ShardFeatures,
    StepSettings,
    plan_steps,
    reuse_freed_memory,
    run_steps,
)
from fuss_ray.federation.types import Broadcast
from fuss_ray.io import write_json
from fuss_ray.losses import CorrespondenceLoss
from fuss_ray.models.head import FussModel, load_model_state, model_state
from tests.reference_step import ReferenceLoss, reference_steps
from tools.bench_canonical import machine

# (name, feature channels, grid side, code dim, centroids, sample points per side):
# EfficientNet-Lite0's stride-8 + stride-16 features (40 + 112 channels) at 128 px
# (configs/benchmark.yaml, 7 x 7 points since it moved to the regime where strategies
# can differ; "benchmark-11" is its shapes before, as the performance issue measured
# them) and at 224 px (configs/quickstart.yaml).
SHAPES = [
    ("benchmark", 152, 16, 70, 12, 7),
    ("benchmark-11", 152, 16, 70, 12, 11),
    ("quickstart", 152, 28, 70, 5, 11),
]
WEIGHTS, SHIFTS = (0.67, 0.25, 0.63), (0.08, 0.02, 0.66)
BATCH, IMAGES, KNN_K = 8, 40, 2
LRS = (5e-4, 5e-3)


class Workload:
    """One client's shard of random feature maps, its kNN table and a model."""

    def __init__(self, dim: int, side: int, code: int, cents: int, samples: int) -> None:
        rng = np.random.default_rng(0)
        self.maps = rng.standard_normal((IMAGES, dim, side, side), dtype=np.float32)
        self.indices = np.arange(IMAGES, dtype=np.int64)
        self.knn = rng.integers(IMAGES, size=(IMAGES, KNN_K)).astype(np.int64)
        torch.manual_seed(0)
        self.model = FussModel(dim, code, cents)
        self.start = model_state(self.model)
        self.cents = cents
        self.samples = samples
        self.settings = StepSettings(LRS[0], LRS[1], 1.0, cents)

    def gather(self, idx: np.ndarray) -> np.ndarray:
        return self.maps[idx]

    def reference(self, steps: int, seed: int) -> dict[str, np.ndarray]:
        load_model_state(self.model, self.start)
        self.model.train()
        reference_steps(
            self.model,
            self.gather,
            self.indices,
            self.knn,
            ReferenceLoss(WEIGHTS, SHIFTS, samples=self.samples),
            steps=steps,
            batch=BATCH,
            seed=seed,
            lrs=LRS,
            cluster_weight=1.0,
            num_centroids=self.cents,
            device=torch.device("cpu"),
        )
        return model_state(self.model)

    def current(self, steps: int, seed: int) -> dict[str, np.ndarray]:
        load_model_state(self.model, self.start)
        self.model.train()
        torch.manual_seed(seed)
        loss_fn = CorrespondenceLoss(WEIGHTS, SHIFTS, samples=self.samples)
        plan = plan_steps(IMAGES, self.knn, BATCH, steps, seed, loss_fn)
        device = torch.device("cpu")
        run = LocalRun(0, self.model, Broadcast({}, {}), None, device, steps, lambda: self.model)
        features = ShardFeatures(self.gather, self.indices, device, 0)
        run_steps(self.model, features, plan, loss_fn, self.settings, ClientObjective(), run)
        return model_state(self.model)


def timed(fn: Any, steps: int, seed: int) -> float:
    t0 = time.perf_counter()
    fn(steps, seed)
    return steps / (time.perf_counter() - t0)


def measure(shape: tuple[str, int, int, int, int, int], steps: int, rounds: int) -> dict[str, Any]:
    name, dim, side, code, cents, samples = shape
    work = Workload(dim, side, code, cents, samples)
    work.reference(2, 99)  # warm-up: allocator, MKL kernels
    work.current(2, 99)
    old, new = [], []
    for r in range(rounds):
        old.append(timed(work.reference, steps, r))
        new.append(timed(work.current, steps, r))
    ref_state, cur_state = work.reference(steps, 7), work.current(steps, 7)
    drift = max(
        float(np.abs(ref_state[k] - cur_state[k]).max() / (np.abs(ref_state[k]).max() + 1e-12))
        for k in ref_state
    )
    old_sps, new_sps = statistics.median(old), statistics.median(new)
    return {
        "shape": {
            "name": name,
            "batch": BATCH,
            "channels": dim,
            "grid": side,
            "code_dim": code,
            "centroids": cents,
            "samples": samples,
            "permutations": 5,
        },
        "steps_per_round": steps,
        "rounds": rounds,
        "reference_steps_per_s": old_sps,
        "current_steps_per_s": new_sps,
        "reference_ms_per_step": 1000 / old_sps,
        "current_ms_per_step": 1000 / new_sps,
        "speedup": new_sps / old_sps,
        "reference_all": old,
        "current_all": new,
        "state_max_rel_diff_after_steps": drift,
    }


def worker(kind: str, shape_name: str) -> None:
    """Serve timed rounds to the parent: a line "STEPS SEED" in, steps per second out."""
    torch.set_num_threads(1)
    if kind == "current":
        reuse_freed_memory()
    shape = next(s for s in SHAPES if s[0] == shape_name)
    work = Workload(*shape[1:])
    fn = work.current if kind == "current" else work.reference
    fn(2, 99)  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        steps, seed = map(int, line.split())
        print(timed(fn, steps, seed), flush=True)


def as_hosts_run_them(shape_name: str, steps: int, rounds: int) -> dict[str, Any]:
    """Reference and current step in two worker processes, rounds alternating."""
    import subprocess

    procs = {
        kind: subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, "--shape", shape_name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for kind in ("reference", "current")
    }
    try:
        for p in procs.values():
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        seen: dict[str, list[float]] = {"reference": [], "current": []}
        for r in range(rounds):
            for kind, p in procs.items():
                assert p.stdin is not None and p.stdout is not None
                p.stdin.write(f"{steps} {r}\n")
                p.stdin.flush()
                seen[kind].append(float(p.stdout.readline()))
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    old, new = statistics.median(seen["reference"]), statistics.median(seen["current"])
    return {
        "reference_steps_per_s": old,
        "current_steps_per_s": new,
        "reference_ms_per_step": 1000 / old,
        "current_ms_per_step": 1000 / new,
        "speedup": new / old,
        "reference_all": seen["reference"],
        "current_all": seen["current"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of each")
    parser.add_argument("--smoke", action="store_true", help="tiny run, for the tests")
    parser.add_argument("--worker", choices=["reference", "current"], help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.shape)
        return
    torch.set_num_threads(1)
    reuse = reuse_freed_memory()  # as every client host does (both loops run under it)
    steps, rounds = (2, 1) if args.smoke else (args.steps, args.rounds)
    result = {
        "command": "python tools/bench_step.py" + (f" --json {args.json}" if args.json else ""),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": 1,
        "reuse_freed_memory": reuse,
        "shapes": [
            {
                **measure(s, steps, rounds),
                "as_hosts_run_them": as_hosts_run_them(s[0], steps, rounds),
            }
            for s in SHAPES
        ],
    }
    for s in result["shapes"]:
        h = s["as_hosts_run_them"]
        print(
            f"{s['shape']['name']:>10}: as hosts run them: reference "
            f"{h['reference_ms_per_step']:.1f} ms/step, current {h['current_ms_per_step']:.1f} "
            f"ms/step, {h['speedup']:.2f}x; one process, one allocator: "
            f"{s['reference_ms_per_step']:.1f} against {s['current_ms_per_step']:.1f} ms/step, "
            f"{s['speedup']:.2f}x (state differs by {s['state_max_rel_diff_after_steps']:.1e} "
            "relative)"
        )
    if args.json is not None:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
