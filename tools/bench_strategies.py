"""Strategy cost: aggregation time against the number of clients and of centroids.

Each strategy's round splits in two: the per-client half (screening, weighted sums, OT
plans), which fuss-ray runs on the actors that host the clients, and the server's half
(finishing the sums, FedCC's maximin or k-means over the pooled K x C centroids, the OT
barycentre). Both are timed here, in one process, on seeded updates with a ViT-S head
(384 -> 70 codes, 0.2 M parameters) and C centroids per client. FedProx and MOON aggregate
exactly as FedAvg does (their difference is the local objective), so they are not repeated.
The baseline in each row's ratio is FedAvg at the same K and C, measured in the same run.

    python tools/bench_strategies.py --json docs/bench/strategy-cost.json \
        --plot docs/strategy_cost.png
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

STRATEGIES = ("fedavg", "fuss-maximin", "fuss-kmeans", "ot-match")
IN_DIM, CODE_DIM = 384, 70


def head_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    shapes = {
        "head.linear.weight": (CODE_DIM, IN_DIM, 1, 1),
        "head.linear.bias": (CODE_DIM,),
        "head.nonlinear.0.weight": (IN_DIM, IN_DIM, 1, 1),
        "head.nonlinear.0.bias": (IN_DIM,),
        "head.nonlinear.2.weight": (CODE_DIM, IN_DIM, 1, 1),
        "head.nonlinear.2.bias": (CODE_DIM,),
    }
    return {k: (0.05 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def make_updates(clients: int, centroids: int, seed: int = 0) -> tuple[Any, list[Any]]:
    from fuss_ray.federation.strategies import ClientUpdate

    rng = np.random.default_rng([seed, clients, centroids])
    base = head_state(rng)
    global_state = {
        **base,
        "centroids": rng.standard_normal((centroids, CODE_DIM)).astype(np.float32),
    }
    updates = []
    for cid in range(clients):
        state = {
            k: v + (0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in base.items()
        }
        # Each client's centroids: the global ones permuted and perturbed (label ambiguity).
        perm = rng.permutation(centroids)
        state["centroids"] = global_state["centroids"][perm] + (
            0.1 * rng.standard_normal((centroids, CODE_DIM))
        ).astype(np.float32)
        occupancy = rng.dirichlet(np.ones(centroids))
        updates.append(ClientUpdate(cid, int(rng.integers(8, 64)), state, occupancy, 0.0))
    return global_state, updates


def time_strategy(
    name: str, global_state: Any, updates: list[Any], repeats: int
) -> dict[str, float]:
    """Median seconds of the per-client half (all clients) and of the server's half."""
    from fuss_ray.federation.buffer import Buffer
    from fuss_ray.federation.reduction import grid_shifts, reduce_updates
    from fuss_ray.federation.server_update import build_update

    client_s, server_s = [], []
    for _ in range(repeats):
        strategy = build_update({"name": name}, 0)
        started = time.perf_counter()
        shifts = grid_shifts(
            strategy.summand_references(global_state), sum(u.num_samples for u in updates)
        )
        reduced = reduce_updates(strategy, global_state, shifts, updates, None)
        client_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        strategy.merge(Buffer.round(global_state, 0, reduced), 1)
        server_s.append(time.perf_counter() - started)
    return {"client_side_s": statistics.median(client_s), "server_s": statistics.median(server_s)}


def plot(rows: list[dict[str, Any]], path: Path, centroids: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in STRATEGIES:
        pts = sorted(
            (r["clients"], r["server_s"])
            for r in rows
            if r["strategy"] == name and r["centroids"] == centroids
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clients aggregated in the round (K)")
    ax.set_ylabel("server aggregation time (s)")
    ax.set_title(f"Server aggregation cost, {centroids} centroids, ViT-S head")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    from fuss_ray.tracking.plots import save_png

    save_png(fig, path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--centroids", nargs="+", type=int, default=[3, 27, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for k in args.clients:
        for c in args.centroids:
            global_state, updates = make_updates(k, c)
            base = None
            for name in STRATEGIES:
                t = time_strategy(name, global_state, updates, args.repeats)
                base = base or t["server_s"]
                rows.append(
                    {
                        "strategy": name,
                        "clients": k,
                        "centroids": c,
                        **t,
                        "server_vs_fedavg": t["server_s"] / base,
                    }
                )
                print(
                    f"K={k:5d} C={c:4d} {name:13s} client side {t['client_side_s']:8.4f} s  "
                    f"server {t['server_s']:8.4f} s  ({t['server_s'] / base:.1f}x fedavg)",
                    flush=True,
                )
            del updates
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"machine": platform.processor() or platform.machine(), "rows": rows}, indent=1
            )
        )
    if args.plot is not None:
        plot(rows, args.plot, 27 if 27 in args.centroids else args.centroids[0])
    print("| strategy | K | C | per-client half, all clients (s) | server (s) | server vs FedAvg |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['strategy']} | {r['clients']} | {r['centroids']} | {r['client_side_s']:.4f} | "
            f"{r['server_s']:.4f} | {r['server_vs_fedavg']:.1f}x |"
        )


if __name__ == "__main__":
    main()
