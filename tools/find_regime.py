"""Which training budget lets strategies differ? Candidates of the benchmark, measured.

FedCC and optimal-transport matching exist for clients whose centroids drift out of the
shared index order; 48 local steps per client (the benchmark until now) never produce
that. For each candidate (overrides of configs/benchmark.yaml: more local steps, other
learning rates, fewer sample points) this runs FedAvg on the Dirichlet alpha 0.1 split
with the shared initial order, over a few seeds, and records per round the share of
clients whose centroids left the index order (`alignment.misaligned`), the validation
mIoU curve and whether it has plateaued (`fuss_ray.study.stats.plateau`), the final test
mIoU, and the seconds per run. The cheapest candidate with at least 480 steps per client
whose curves plateau and whose misaligned share is above 0 in some round is `chosen`.

    python tools/find_regime.py --json docs/bench/regime-search.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The benchmark as it was before this search (configs/benchmark.yaml now holds its
# answer), so that each candidate names all it changes.
BASE = {
    "federation.strategy": "fedavg",
    "partition.alpha": 0.1,
    "train.local_steps": 8,
    "train.lr_centroids": 0.005,
    "loss.feature_samples": 11,
}
CANDIDATES: list[dict[str, Any]] = [
    {"name": "today (8 x 6)", "train.local_steps": 8},
    {"name": "80 x 6", "train.local_steps": 80},
    {"name": "80 x 6, 7 x 7 points", "train.local_steps": 80, "loss.feature_samples": 7},
    {"name": "80 x 6, centroid lr 0.05", "train.local_steps": 80, "train.lr_centroids": 0.05},
    {
        "name": "160 x 6, 7 x 7 points",
        "train.local_steps": 160,
        "loss.feature_samples": 7,
    },
    {
        "name": "80 x 6, 7 x 7 points, centroid lr 0.05",
        "train.local_steps": 80,
        "loss.feature_samples": 7,
        "train.lr_centroids": 0.05,
    },
]


def run(candidate: dict[str, Any], seed: int, cache: str) -> dict[str, Any]:
    """One FedAvg run of a candidate: its curves, alignment per round, time."""
    import torch

    from fuss_ray.config import load_config
    from fuss_ray.simulation import run_simulation

    torch.set_num_threads(1)
    sets = {**BASE, **{k: v for k, v in candidate.items() if k != "name"}}
    overrides = [f"{k}={json.dumps(v)}" for k, v in sets.items()]
    overrides += [f"seed={seed}", "tracking=off", f"features.cache_dir={cache}"]
    config = load_config(ROOT / "configs" / "benchmark.yaml", overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summary = run_simulation(config, Path(out), show_progress=False)
    rounds = summary["rounds"]
    return {
        "candidate": candidate["name"],
        "seed": seed,
        "seconds": time.perf_counter() - started,
        "steps_per_client": summary["budget"]["client_steps_total"] // summary["num_clients"],
        "val_curve": [r["val_miou"] for r in rounds],
        "misaligned": [r["alignment"]["misaligned"] for r in rounds],
        "gap_index": [r["alignment"]["gap_index"] for r in rounds],
        "test_miou": summary["final"]["miou"],
    }


def warm_cache(cache: Path) -> None:
    from fuss_ray.config import load_config
    from fuss_ray.simulation import prepare

    config = load_config(ROOT / "configs" / "benchmark.yaml", [f"features.cache_dir={cache}"])
    prepare(config, show_progress=False)


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    from fuss_ray.study.stats import plateau

    mine = [r for r in runs if r["candidate"] == name]
    level = plateau([r["val_curve"] for r in mine])
    drift = max(max(r["misaligned"]) for r in mine)
    return {
        "candidate": name,
        "seeds": len(mine),
        "steps_per_client": mine[0]["steps_per_client"],
        "seconds_per_run": sum(r["seconds"] for r in mine) / len(mine),
        "max_misaligned": drift,
        "plateau": level,
        "test_miou": [r["test_miou"] for r in mine],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="+", default=None, help="candidate names")
    parser.add_argument("--cache", type=Path, default=ROOT / ".fuss_cache")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    todo = [c for c in CANDIDATES if args.only is None or c["name"] in args.only]
    # Runs an earlier invocation wrote to --json, of a candidate defined as it is now,
    # are kept: adding a candidate runs only that one.
    earlier = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    same = [c for c in earlier.get("candidates", []) if c in todo]
    runs: list[dict[str, Any]] = [
        r
        for r in earlier.get("runs", [])
        if any(r["candidate"] == c["name"] for c in same) and r["seed"] < args.seeds
    ]
    done = {(r["candidate"], r["seed"]) for r in runs}
    jobs = [(c, s) for c in todo for s in range(args.seeds) if (c["name"], s) not in done]
    warm_cache(args.cache.resolve())  # once, before two workers would both extract it
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run, c, s, str(args.cache.resolve())) for c, s in jobs]
        for f in futures:
            runs.append(f.result())
            print(json.dumps(runs[-1]), flush=True)
    rows = [summarise(c["name"], runs) for c in todo]
    eligible = [
        r
        for r in rows
        if r["steps_per_client"] >= 480 and r["max_misaligned"] > 0 and r["plateau"]["plateaued"]
    ]
    chosen = min(eligible, key=lambda r: r["seconds_per_run"]) if eligible else None
    result = {
        "command": "python tools/find_regime.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "base": BASE,
        "candidates": todo,
        "summary": rows,
        "chosen": None if chosen is None else chosen["candidate"],
        "runs": runs,
    }
    if args.json is not None:
        from fuss_ray.io import write_json

        write_json(args.json, result)
    for r in rows:
        print(json.dumps({k: r[k] for k in ("candidate", "max_misaligned", "seconds_per_run")}))
    print(f"chosen: {result['chosen']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
