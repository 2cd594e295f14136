"""GPU checks for the device machine: every strategy end to end, then training rounds and
extraction at 1, 4 and 8 actors per GPU.

Run on a machine with one GPU (the `device` tool's H100/H200). First, two rounds of every
registered strategy (MOON's term needs the second) on a tiny synthetic run, with two Ray
actors sharing the GPU (num_gpus 0.5 each), from the feature cache and with online
features (each actor's own backbone on the GPU): each must finish, and its final mIoU is
set beside the same run on the CPU. `--device cpu` runs this part on the CPU alone (no
GPU needed), to check the script itself. Then, for k actors sharing the GPU
(num_gpus = 1/k each, so each process is capped at 1/k of its memory):
- rounds per second of the canonical workload (tools/bench_canonical.py) with k actors,
  each hosting N/k clients that train on the GPU, and the final state's agreement with
  the same rounds on one process (close, not bit-identical: GPU kernels differ);
- extraction images per second summed over k actors, each running its own backbone.

    python tools/gpu_check.py --json gpu.json          # about 5 minutes on an H100
    python tools/gpu_check.py --device cpu --only strategies   # the first part, on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def training(actors: int, clients: int, steps: int, rounds: int) -> dict[str, Any]:
    import bench_canonical as bc

    from fuss_ray.config import validate_config
    from fuss_ray.federation.executor import RayExecutor

    tree = bc.workload_config(clients, steps, actors).to_dict()
    tree["federation"].update({"num_gpus": 1.0 / actors, "num_cpus": 1.0, "device": "auto"})
    config = validate_config(tree)
    spec = bc.host_spec(config, clients)
    executor = RayExecutor(spec, config.federation)
    try:
        out = bc.run_rounds(executor, config, clients, rounds)
    finally:
        executor.shutdown()
    return {
        "actors_per_gpu": actors,
        "clients": clients,
        "local_steps": steps,
        "s_per_round": out["median_s"],
        "rounds_per_s": 1.0 / out["median_s"],
        "rounds_s": out["seconds"],
    }


def end_to_end(strategy: str, mode: str, device: str, cache: Path) -> dict[str, Any]:
    """Two rounds of one strategy, clients on `device` in two actors, final mIoU and time."""
    from fuss_ray.config import validate_config
    from fuss_ray.simulation import run_simulation

    gpus = 0.5 if device == "cuda" else 0.0
    tree = {
        "name": f"gpu-check-{strategy}-{mode}",
        "data": {"num_images": 32, "num_eval_images": 8, "num_classes": 3, "image_size": 64},
        "partition": {"kind": "dirichlet", "num_clients": 4, "alpha": 0.5, "min_images": 2},
        "features": {"input_size": 64, "label_size": 32, "cache_dir": str(cache), "mode": mode},
        "model": {"code_dim": 8},
        "train": {"rounds": 2, "local_steps": 4, "batch_size": 4},
        "federation": {
            "strategy": strategy,
            "executor": "ray",
            "clients_per_actor": 2,
            "num_cpus": 0.5,
            "num_gpus": gpus,
            "device": device,
        },
        "evaluation": {"flip_tta": True},
        "tracking": False,
    }
    started = time.perf_counter()
    summary = run_simulation(validate_config(tree), cache / "runs" / tree["name"], False)
    return {
        "strategy": strategy,
        "features": mode,
        "device": device,
        "final_miou": summary["final"]["miou"],
        "flip_miou": summary["final"].get("variants", {}).get("flip", {}).get("miou"),
        "seconds": time.perf_counter() - started,
    }


def strategies(device: str, cache: Path) -> list[dict[str, Any]]:
    """Every strategy from the cache, and two with online features, on `device` and the CPU."""
    from fuss_ray.federation.strategies import STRATEGIES

    rows = []
    cases = [(name, "cache") for name in sorted(STRATEGIES)] + [
        ("moon", "online"),
        ("fuss-maximin", "online"),
    ]
    for name, mode in cases:
        row = end_to_end(name, mode, device, cache)
        if device != "cpu":
            row["cpu_final_miou"] = end_to_end(name, mode, "cpu", cache)["final_miou"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def extraction(actors: int, backbone: str, batch: int, seconds: float) -> dict[str, Any]:
    import bench_extract as be
    import ray

    remote = ray.remote(num_gpus=1.0 / actors, num_cpus=1)(be.measure)
    started = time.perf_counter()
    rows = ray.get([remote.remote(backbone, 224, batch, seconds, "cuda") for _ in range(actors)])
    return {
        "actors_per_gpu": actors,
        "backbone": backbone,
        "batch": batch,
        "images_per_s_total": sum(r["images_per_s"] for r in rows),
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    import ray
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backbones", nargs="+", default=["dino_vits8", "dino_vitb8"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--only", choices=["strategies", "all"], default="all")
    parser.add_argument("--cache", type=Path, default=Path(".fuss_cache_gpu_check"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no GPU visible")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "none (cpu)",
        "strategies": strategies(args.device, args.cache.resolve()),
        "training": [],
        "extraction": [],
    }
    for k in (1, 4, 8) if args.only == "all" else ():
        result["training"].append(training(k, args.clients, args.steps, args.rounds))
        print(json.dumps(result["training"][-1]), flush=True)
        for backbone in args.backbones:
            result["extraction"].append(extraction(k, backbone, args.batch, args.seconds))
            print(json.dumps(result["extraction"][-1]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
