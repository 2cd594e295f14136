"""What one extra logical client costs in memory, measured directly.

A host process is built with N1 and then (in a fresh process) N2 clients of the canonical
workload (16 generated (384, 28, 28) maps each, kNN k = 1), every client is trained one
local step, and the resident memory is read after construction and after the round. The
cost of one client is the difference divided by N2 - N1. Strategies that keep no client
state between rounds (FedAvg, FedCC, OT) should cost only the client's index arrays and
bookkeeping; local-only and MOON also keep one model state per client. The feature maps
are generated per block on demand and shared, never copied per client (as the cache's
memory-mapped shards are).

    python tools/client_memory.py --json docs/bench/client-memory.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mib() -> float:
    import psutil

    gc.collect()
    return float(psutil.Process().memory_info().rss) / 2**20


def child(strategy: str, clients: int) -> dict[str, Any]:
    import bench_canonical as bc
    import numpy as np

    from fuss_ray.config import validate_config
    from fuss_ray.federation.client import ClientHost
    from fuss_ray.federation.reduction import grid_shifts
    from fuss_ray.federation.server_update import build_update
    from fuss_ray.federation.types import Broadcast
    from fuss_ray.simulation import initial_state

    tree = bc.workload_config(clients, 1, 1).to_dict()
    tree["federation"]["strategy"] = {"name": strategy}
    config = validate_config(tree)
    spec = bc.host_spec(config, clients)
    before = rss_mib()
    host = ClientHost(spec)
    built = rss_mib()
    strat = build_update(config.federation.strategy, config.seed)
    state = initial_state(config, bc.SHAPE[0])
    shifts = grid_shifts(strat.summand_references(state), host.ready() * bc.MAPS_PER_CLIENT)
    host.train_reduced(Broadcast(state), shifts, list(range(clients)), 1)
    trained = rss_mib()
    state_bytes = sum(int(np.asarray(v).nbytes) for v in state.values())
    # Exact: the arrays the host keeps for its clients after the round.
    kept = sum(host.indices[c].nbytes + host.knn[c].nbytes for c in host.indices)
    kept += sum(int(np.asarray(v).nbytes) for s in host.kept.values() for v in s.values())
    return {
        "strategy": strategy,
        "clients": clients,
        "rss_before_host_mib": before,
        "rss_built_mib": built,
        "rss_after_round_mib": trained,
        "state_bytes": state_bytes,
        "persistent_states": len(host.states) + len(host.previous),
        "kept_array_bytes_per_client": kept / clients,
    }


def measure(strategy: str, clients: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", strategy, str(clients)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("STRATEGY", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--strategies", nargs="+", default=["fedavg", "local"])
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=400)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    rows = []
    for strategy in args.strategies:
        small, large = measure(strategy, args.small), measure(strategy, args.large)
        extra = args.large - args.small
        row = {
            "strategy": strategy,
            "small": small,
            "large": large,
            "per_client_built_kib": 1024
            * (large["rss_built_mib"] - small["rss_built_mib"])
            / extra,
            "per_client_after_round_kib": 1024
            * (large["rss_after_round_mib"] - small["rss_after_round_mib"])
            / extra,
            "model_state_kib": small["state_bytes"] / 1024,
            "kept_arrays_per_client_kib": large["kept_array_bytes_per_client"] / 1024,
        }
        rows.append(row)
        print(
            f"{strategy:8s}: one extra client costs {row['per_client_built_kib']:.1f} KiB once "
            f"built, {row['per_client_after_round_kib']:.1f} KiB after a round; arrays kept "
            f"per client {row['kept_arrays_per_client_kib']:.1f} KiB "
            f"(a model state is {row['model_state_kib']:.0f} KiB)",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
