"""How big must the synthetic benchmark be for the centralised reference to be stable?

Runs the centralised strategy (all data on one client) over several seeds for each
candidate size and reports the seed standard deviation of test mIoU, with seconds per
run, so that the committed benchmark can be the cheapest size below the bar (3 mIoU).

    python tools/calibrate_benchmark.py --json docs/bench/benchmark-calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
# From the quickstart's size up. The seed varies the partition, the validation carve-out,
# the initial model and the training draws in every candidate; with "data.seed" fixed the
# scenes are one dataset (as a real benchmark is), otherwise each seed draws new scenes.
CANDIDATES: list[dict[str, Any]] = [
    {"data.num_images": 200, "data.num_eval_images": 40, "data.num_classes": 5},
    {"data.num_images": 300, "data.num_eval_images": 150, "data.num_classes": 5},
    {"data.num_images": 300, "data.num_eval_images": 150, "data.num_classes": 8, "data.seed": 0},
    {
        "data.num_images": 300,
        "data.num_eval_images": 150,
        "data.num_classes": 8,
        "data.seed": 0,
        "train.rounds": 12,
    },
    {"data.num_images": 450, "data.num_eval_images": 150, "data.num_classes": 12, "data.seed": 0},
    {"data.num_images": 600, "data.num_eval_images": 200, "data.num_classes": 15, "data.seed": 0},
]


def run(sets: dict[str, Any], seed: int, cache: Path) -> dict[str, float]:
    from fuss_ray.config import load_config
    from fuss_ray.simulation import run_simulation

    overrides = [f"{k}={json.dumps(v)}" for k, v in sets.items()]
    overrides += [
        f"seed={seed}",
        "federation.strategy=centralized",
        # The training this calibration measured (before tools/find_regime.py chose
        # configs/benchmark.yaml's budget).
        "train.local_steps=8",
        "train.lr_centroids=0.005",
        "loss.feature_samples=11",
        "tracking=off",
        f"features.cache_dir={cache}",
    ]
    config = load_config(ROOT / "configs" / "benchmark.yaml", overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summary = run_simulation(config, Path(out), show_progress=False)
    return {"miou": summary["final"]["miou"], "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=ROOT / ".fuss_cache")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--only", type=int, nargs="*", default=None, help="candidate indices")
    args = parser.parse_args()
    rows = []
    chosen = args.only if args.only is not None else range(len(CANDIDATES))
    for sets in (CANDIDATES[i] for i in chosen):
        results = [run(sets, seed, args.cache) for seed in range(args.seeds)]
        mious = [r["miou"] for r in results]
        row = {
            "size": sets,
            "seeds": args.seeds,
            "miou_mean": statistics.mean(mious),
            "miou_std": statistics.stdev(mious),
            "mious": mious,
            "seconds_per_run": statistics.median(r["seconds"] for r in results),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json is not None:
        machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
        payload = {
            "command": " ".join(["python tools/calibrate_benchmark.py", *sys.argv[1:]]),
            "machine": machine,
            "bar_miou_std": 3.0,
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
