"""Scaling grid: round time and peak memory for N clients x clients_per_actor.

The canonical workload (tools/bench_canonical.py: 16 generated (384, 28, 28) maps per
client, STEGO head, FedAvg over every client) with one local step per client per round.
For each N the sequential executor runs once, and then the Ray executor once per
`clients_per_actor` in {1, 10, 100}: ceil(N / cpa) actors sharing the machine's CPUs
(num_cpus = CPUs / actors each). The overhead ratio is Ray / (sequential / CPUs used), on
the same workload in the same invocation. Combinations are skipped when their actors
cannot fit in memory (each actor is a process with torch: about 450 MiB) or when they
repeat another packing (cpa >= N is one actor either way).

    python tools/bench_scaling.py --json docs/bench/scaling.json --plot docs/scaling.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ACTOR_MIB = 450  # measured per-actor resident memory with torch loaded (docs/scale.md)


def skip_reason(clients: int, per_actor: int, max_actors: int, previous: list[int]) -> str | None:
    actors = math.ceil(clients / per_actor)
    if per_actor > clients and any(p >= clients for p in previous):
        same = min(p for p in previous if p >= clients)
        return f"same packing as clients_per_actor={same} (one actor)"
    if actors > max_actors:
        need = actors * ACTOR_MIB / 1024
        return (
            f"{actors} actors need about {need:.0f} GiB of actor processes alone "
            f"(at most {max_actors} fit in free memory)"
        )
    return None


def ray_rounds(clients: int, per_actor: int, rounds: int, cpus: int) -> dict[str, Any]:
    import bench_canonical as bc

    from fuss_ray.config import validate_config
    from fuss_ray.federation.executor import RayExecutor

    actors = math.ceil(clients / per_actor)
    tree = bc.workload_config(clients, 1, actors).to_dict()
    tree["federation"].update({"clients_per_actor": per_actor, "num_cpus": cpus / actors})
    config = validate_config(tree)
    spec = bc.host_spec(config, clients)
    started = time.perf_counter()
    executor = RayExecutor(spec, config.federation)
    setup = time.perf_counter() - started
    try:
        out = bc.run_rounds(executor, config, clients, rounds)
    finally:
        executor.shutdown()
    out["setup_s"] = setup
    out["actors"] = actors
    return out


def sequential_rounds(clients: int, rounds: int) -> dict[str, Any]:
    import bench_canonical as bc

    from fuss_ray.federation.executor import SequentialExecutor

    config = bc.workload_config(clients, 1, 1)
    spec = bc.host_spec(config, clients)
    executor = SequentialExecutor(spec)
    out = bc.run_rounds(executor, config, clients, rounds)
    del executor
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    seq = sorted({(r["clients"], r["sequential_s_per_round"]) for r in rows})
    ax.plot([s[0] for s in seq], [s[1] for s in seq], "k--", marker="s", label="sequential")
    ideal = sorted({(r["clients"], r["ideal_s_per_round"]) for r in rows})
    ax.plot(
        [s[0] for s in ideal],
        [s[1] for s in ideal],
        ":",
        color="grey",
        label="ideal (sequential / CPUs)",
    )
    for cpa in sorted({r["clients_per_actor"] for r in rows if r.get("ray_s_per_round")}):
        pts = sorted(
            (r["clients"], r["ray_s_per_round"])
            for r in rows
            if r["clients_per_actor"] == cpa and r.get("ray_s_per_round")
        )
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            label=f"Ray, {cpa} clients per actor",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("logical clients N (all trained each round, 1 local step)")
    ax.set_ylabel("seconds per round")
    ax.set_title("Round time against N, 2-core machine")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    from fuss_ray.tracking.plots import save_png

    save_png(fig, path, dpi=120)


def main() -> None:
    import bench_canonical as bc
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--per-actor", nargs="+", type=int, default=[1, 10, 100])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-actors", type=int, default=None, help="default: what memory allows")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    free_mib = psutil.virtual_memory().available / 2**20
    max_actors = args.max_actors or int((free_mib - 4096) // ACTOR_MIB)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    rows: list[dict[str, Any]] = []
    for n in args.clients:
        print(f"N={n}: sequential", file=sys.stderr, flush=True)
        seq = sequential_rounds(n, args.rounds)
        done: list[int] = []
        for cpa in args.per_actor:
            row: dict[str, Any] = {
                "clients": n,
                "clients_per_actor": cpa,
                "sequential_s_per_round": seq["median_s"],
                "sequential_peak_rss_mib": seq["peak_rss_mib"],
                "ideal_s_per_round": seq["median_s"] / cpus,
            }
            reason = skip_reason(n, cpa, max_actors, done)
            if reason is not None:
                row["skipped"] = reason
                rows.append(row)
                print(f"N={n} cpa={cpa}: skipped, {reason}", flush=True)
                continue
            print(f"N={n} cpa={cpa}: ray", file=sys.stderr, flush=True)
            par = ray_rounds(n, cpa, args.rounds, cpus)
            identical = all(np.array_equal(seq["state"][k], par["state"][k]) for k in seq["state"])
            row.update(
                {
                    "actors": par["actors"],
                    "ray_s_per_round": par["median_s"],
                    "ray_rounds_s": par["seconds"],
                    "ray_setup_s": par["setup_s"],
                    "ray_peak_rss_mib": par["peak_rss_mib"],
                    "overhead_vs_ideal": par["median_s"] / (seq["median_s"] / cpus),
                    "bit_identical": identical,
                }
            )
            rows.append(row)
            done.append(cpa)
            print(
                f"N={n} cpa={cpa} actors={par['actors']}: sequential {seq['median_s']:.2f} s, "
                f"ray {par['median_s']:.2f} s, overhead {row['overhead_vs_ideal']:.2f}x ideal, "
                f"peak {par['peak_rss_mib']:.0f} MiB, identical={identical}",
                flush=True,
            )
    ray.shutdown()
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": bc.machine(), "rounds": args.rounds, "rows": rows}, indent=1)
        )
    if args.plot is not None:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
