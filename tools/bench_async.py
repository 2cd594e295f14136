"""Synchronous rounds against asynchronous FedBuff on the virtual clock, over seeds.

Heavy-tailed devices (lognormal speed, sigma 1) that come and go (availability 0.8 per
round or dispatch, 5% dropouts), on the benchmark's synthetic scenes, 20 clients. Three
servers apply the same number of client updates:
- sync: 8 rounds of 10 sampled clients, each round waiting for its slowest;
- sync + deadline: the same, but over-committing by 1.5x and closing each round at a
  deadline of 2 simulated seconds (about twice a median client's download, 8 steps and
  upload);
- async: FedBuff, 10 clients training at once, a server update every 5 arrivals, 16
  updates (polynomial staleness weights, exponent 0.5).
For each: simulated seconds to reach 90% of the synchronous run's final test mIoU (same
seed), and the final mIoU.

    python tools/bench_async.py --seeds 0 1 2 3 4 --json docs/bench/sync-async.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "partition.num_clients=20",
    "partition.alpha=0.5",
    "partition.min_images=6",
    "train.local_steps=8",
    # The benchmark as this comparison was measured on (before the regime search).
    "train.lr_centroids=0.005",
    "loss.feature_samples=11",
    "federation.executor=sequential",
    "tracking=off",
    "systems.enabled=true",
    "systems.speed_sigma=1.0",
    "systems.availability=0.8",
    "systems.dropout=0.05",
]
MODES: dict[str, list[str]] = {
    "sync": ["train.rounds=8", "federation.fraction=0.5"],
    "sync+deadline": [
        "train.rounds=8",
        "federation.fraction=0.5",
        "systems.over_commit=1.5",
        "systems.deadline_s=2.0",
    ],
    "async": [
        "train.rounds=16",
        "federation.mode=async",
        "federation.fedbuff.concurrency=10",
        "federation.fedbuff.buffer_size=5",
    ],
}


def run(mode: str, seed: int, cache: Path) -> dict[str, Any]:
    from fuss_ray.config import load_config
    from fuss_ray.simulation import run_simulation

    sets = [*COMMON, *MODES[mode], f"seed={seed}", f"features.cache_dir={cache}"]
    config = load_config(ROOT / "configs" / "benchmark.yaml", sets)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summary = run_simulation(config, Path(out), show_progress=False)
    curve = [(r["sim_clock_s"], r["miou"]) for r in summary["rounds"]]
    return {
        "mode": mode,
        "seed": seed,
        "curve": curve,
        "final_miou": summary["final"]["miou"],
        "sim_seconds": curve[-1][0],
        "wall_seconds": time.perf_counter() - started,
    }


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first simulated second the curve reaches `target` (None: never)."""
    return next((t for t, m in curve if m >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--cache", type=Path, default=ROOT / ".fuss_cache")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        per_mode = {mode: run(mode, seed, args.cache) for mode in MODES}
        target = 0.9 * per_mode["sync"]["final_miou"]
        for r in per_mode.values():
            r["target_miou"] = target
            r["time_to_target_s"] = time_to(r["curve"], target)
            runs.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "curve"}), flush=True)
    table = []
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        reached = [r["time_to_target_s"] for r in mine if r["time_to_target_s"] is not None]
        table.append(
            {
                "mode": mode,
                "seeds": len(mine),
                "reached": len(reached),
                "time_to_target_s_median": statistics.median(reached) if reached else None,
                "final_miou_mean": statistics.mean(r["final_miou"] for r in mine),
                "final_miou_std": statistics.stdev(r["final_miou"] for r in mine)
                if len(mine) > 1
                else 0.0,
                "sim_seconds_mean": statistics.mean(r["sim_seconds"] for r in mine),
            }
        )
        print(json.dumps(table[-1]), flush=True)
    if args.json is not None:
        from fuss_ray.io import write_json

        write_json(
            args.json,
            {
                "command": "python tools/bench_async.py --seeds " + " ".join(map(str, args.seeds)),
                "common": COMMON,
                "modes": MODES,
                "runs": runs,
                "table": table,
            },
        )


if __name__ == "__main__":
    main()
