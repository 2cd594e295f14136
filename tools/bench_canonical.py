"""The canonical workload (described in docs/benchmarks.md) through both fuss-ray executors.

For each setting (N clients, local steps) the same rounds run on the sequential executor
(one process) and on the Ray executor (one actor per CPU, N/actors clients each), in one
invocation, on the same machine. Every client holds 16 seeded (384, 28, 28) feature maps
generated on its host; the head is STEGO's (384 -> 70) with 27 x 70 centroids; a local
step is batch 8, the correspondence loss against a permutation of the batch (11 x 11
samples, shift 0.3) plus the cluster loss; Adam 5e-4 / 5e-3 re-created each round; FedAvg
over every client every round; one torch thread per client. Seconds per round are medians
over rounds 2..R. The ideal is the sequential time divided by the CPUs the actors use.

    python tools/bench_canonical.py                   # all three settings, 3 rounds each
    python tools/bench_canonical.py --settings 100:5 --rounds 4 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MAPS_PER_CLIENT = 16
SHAPE = (384, 28, 28)


def workload_config(clients: int, steps: int, actors: int) -> Any:
    from fuss_ray.config import validate_config

    return validate_config(
        {
            "name": f"canonical-{clients}",
            "seed": 0,
            "partition": {"kind": "iid", "num_clients": clients},
            "model": {"code_dim": 70, "num_centroids": 27, "dropout": 0.1},
            "loss": {
                "weights": {"self": 0.0, "knn": 0.0, "rand": 1.0},
                "shifts": {"self": 0.0, "knn": 0.0, "rand": 0.3},
                "feature_samples": 11,
                "rand_permutations": 1,
                "knn_k": 1,
            },
            "train": {"local_steps": steps, "batch_size": 8, "lr_head": 5e-4, "lr_centroids": 5e-3},
            "federation": {
                "strategy": "fedavg",
                "fraction": 1.0,
                "clients_per_actor": -(-clients // actors),
                "num_cpus": 1.0,
                "executor": "ray",
            },
            "checkpoint": {"every": 0},
            "tracking": False,
        }
    )


def host_spec(config: Any, clients: int) -> Any:
    from fuss_ray.federation.client import HostSpec

    return HostSpec(
        config=config.to_dict(),
        store_path="",
        clients={
            c: list(range(c * MAPS_PER_CLIENT, (c + 1) * MAPS_PER_CLIENT)) for c in range(clients)
        },
        generated={
            "seed": config.seed,
            "num_images": clients * MAPS_PER_CLIENT,
            "shape": list(SHAPE),
            "block": MAPS_PER_CLIENT,
        },
    )


def tree_rss() -> int:
    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_rounds(
    executor: Any, config: Any, clients: int, rounds: int, dim: int = SHAPE[0]
) -> dict[str, Any]:
    """R rounds of train-reduce-finish (features of `dim` channels); seconds per round
    and the final state."""
    from fuss_ray.federation.buffer import Buffer
    from fuss_ray.federation.reduction import grid_shifts
    from fuss_ray.federation.server_update import build_update
    from fuss_ray.simulation import initial_state

    strategy = build_update(config.federation.strategy, config.seed)
    state = initial_state(config, dim)
    ids = list(range(clients))
    seconds = []
    peak = tree_rss()
    for r in range(1, rounds + 1):
        started = time.perf_counter()
        shifts = grid_shifts(strategy.summand_references(state), executor.total_samples)
        reduced = executor.train_reduced(strategy.strategy.broadcast(state), shifts, ids, r)
        state = strategy.merge(Buffer.round(state, r - 1, reduced), r)
        seconds.append(time.perf_counter() - started)
        peak = max(peak, tree_rss())
        print(f"  round {r}: {seconds[-1]:.2f} s", file=sys.stderr, flush=True)
    return {
        "seconds": seconds,
        "median_s": statistics.median(seconds[1:]),
        "state": state,
        "peak_rss_mib": peak / 2**20,
    }


def bench(clients: int, steps: int, rounds: int, actors: int) -> dict[str, Any]:
    import ray

    from fuss_ray.federation.executor import RayExecutor, SequentialExecutor

    config = workload_config(clients, steps, actors)
    spec = host_spec(config, clients)
    print(f"N={clients}, {steps} steps: sequential", file=sys.stderr, flush=True)
    started = time.perf_counter()
    seq = SequentialExecutor(spec)
    seq_setup = time.perf_counter() - started
    sequential = run_rounds(seq, config, clients, rounds)
    del seq
    print(f"N={clients}, {steps} steps: ray, {actors} actors", file=sys.stderr, flush=True)
    started = time.perf_counter()
    par = RayExecutor(spec, config.federation)
    ray_setup = time.perf_counter() - started
    try:
        parallel = run_rounds(par, config, clients, rounds)
    finally:
        par.shutdown()
    identical = all(
        np.array_equal(sequential["state"][k], parallel["state"][k]) for k in sequential["state"]
    )
    ideal = sequential["median_s"] / actors
    return {
        "clients": clients,
        "local_steps": steps,
        "rounds": rounds,
        "actors": actors,
        "sequential_s_per_round": sequential["median_s"],
        "ray_s_per_round": parallel["median_s"],
        "ideal_s_per_round": ideal,
        "share_of_ideal": ideal / parallel["median_s"],
        "sequential_rounds_s": sequential["seconds"],
        "ray_rounds_s": parallel["seconds"],
        "sequential_setup_s": seq_setup,
        "ray_setup_s": ray_setup,
        "peak_rss_mib_ray": parallel["peak_rss_mib"],
        "bit_identical_final_state": identical,
        "ray_nodes": len(ray.nodes()),  # type: ignore[no-untyped-call]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="10:5,100:5,1000:1", help="N:steps,...")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--actors", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=args.actors, include_dashboard=False, log_to_driver=False)
    results = []
    for item in args.settings.split(","):
        n, steps = (int(x) for x in item.split(":"))
        results.append(bench(n, steps, args.rounds, args.actors))
        r = results[-1]
        print(
            f"N={n:5d} steps={steps}: sequential {r['sequential_s_per_round']:.2f} s, "
            f"ray {r['ray_s_per_round']:.2f} s, ideal {r['ideal_s_per_round']:.2f} s, "
            f"{100 * r['share_of_ideal']:.0f}% of ideal, "
            f"identical={r['bit_identical_final_state']}",
            flush=True,
        )
    if args.json is not None:
        from fuss_ray.io import write_json

        write_json(args.json, {"machine": machine(), "results": results})
    return 0


def machine() -> dict[str, Any]:
    import platform

    import torch

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        # The float kernels torch picks, and with them times and last digits, depend on it.
        "cpu": cpu_model(),
    }


VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")


def cpu_model() -> str:
    """The CPU's model name and vector extensions, as Linux reports them (a virtual
    machine's name can be generic; its extensions still tell two CPUs apart)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    info = dict(line.split(":", 1) for line in lines if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = set(info.get("flags", "").split())
    return " ".join([info.get("model name", ""), *(f for f in VECTOR_FLAGS if f in flags)])


if __name__ == "__main__":
    sys.exit(main())
