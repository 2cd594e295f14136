"""The device machine's check: client steps per second of each training engine, stacked
bits on the device, rounds of 1000 clients on one GPU, and every strategy end to end.

One script for one GPU (the `device` tool's H100/H200), in parts, each printed as a JSON
line when done and written to `--json` after every part (a run cut short keeps what it
measured):

- steps: client steps per second and peak device memory, in one process, for the
  per-client path (client_batch 1) and stacks of G = 1, 8, 32, 128 clients, at the
  committed benchmark's shapes (real cached features: `--features`, a feature store of
  configs/benchmark.yaml's training split, float32 or float16) and the canonical
  workload's (384 x 28 x 28, generated once; every client holds the same 16 maps, so map
  generation, on the CPU, is not in the timing). Each engine trains max(G, 16) clients
  for `--steps` steps: one round to warm up (kNN tables, kernels), one timed.
- bits: the same clients in stacks of 8 and of 32 on the device, compared bit for bit.
- rounds: seconds per round of 1000 clients x 1 local step (the canonical workload,
  FedAvg), with 1 and 8 Ray actors sharing the GPU (num_gpus 1 and 1/8), per client
  and in stacks of 32.
- strategies: two rounds of every registered strategy (MOON's term needs the second) on a
  tiny run, two actors sharing the GPU, clients in stacks of 2; each must finish.

    python tools/gpu_check.py --features .fuss_cache/train-... --json docs/bench/gpu.json
    python tools/gpu_check.py --smoke --device cpu --features DIR --json out.json  # tests

`--smoke` is the same script at toy sizes, on the CPU, for the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PARTS = ("steps", "bits", "rounds", "strategies")


@dataclass(frozen=True)
class Sizes:
    """How big each part is (the full check, or `--smoke`)."""

    engines: tuple[int | str, ...]  # "per-client", or G
    min_clients: int
    steps: int
    bits_g: tuple[int, int]
    round_clients: int
    round_actors: tuple[int, ...]
    round_batches: tuple[int, ...]
    rounds: int
    canonical_shape: tuple[int, int, int]
    strategies: tuple[str, ...] | None  # None: every registered one


FULL = Sizes(
    ("per-client", 1, 8, 32, 128), 16, 10, (8, 32), 1000, (1, 8), (1, 32), 3, (384, 28, 28), None
)
SMOKE = Sizes(
    ("per-client", 1, 2), 2, 2, (1, 2), 8, (1, 2), (2,), 2, (16, 8, 8), ("fuss-maximin", "moon")
)


def benchmark_tree(steps: int, batch: int, device: str) -> dict[str, Any]:
    """configs/benchmark.yaml's training settings, for hosts built here."""
    from fuss_ray.config import load_config

    root = Path(__file__).resolve().parent.parent
    tree = load_config(root / "configs" / "benchmark.yaml").to_dict()
    tree["train"]["local_steps"] = steps
    # The shapes the step engine has been measured at (11 x 11 points; the benchmark's
    # study now samples 7 x 7), so that this part's figures stay comparable.
    tree["loss"]["feature_samples"] = 11
    tree["federation"].update({"client_batch": batch, "device": device, "executor": "sequential"})
    tree["tracking"] = {"enabled": False}
    return tree


def canonical_tree(
    steps: int, batch: int, device: str, clients: int, actors: int
) -> dict[str, Any]:
    import bench_canonical as bc

    tree: dict[str, Any] = bc.workload_config(clients, steps, actors).to_dict()
    tree["federation"].update({"client_batch": batch, "device": device})
    return tree


def shared_maps(tree: dict[str, Any], clients: int, shape: tuple[int, int, int]) -> Any:
    """A host spec whose clients all hold the same 16 generated maps (one block)."""
    from fuss_ray.federation.client import HostSpec

    block = {"seed": 0, "num_images": 16, "shape": list(shape), "block": 16}
    return HostSpec(tree, "", {c: list(range(16)) for c in range(clients)}, generated=block)


def real_features(tree: dict[str, Any], clients: int, features: Path) -> Any:
    """A host spec whose clients hold 16 images each of a real feature store."""
    import numpy as np

    from fuss_ray.features.cache import FeatureStore
    from fuss_ray.federation.client import HostSpec

    n = len(FeatureStore.open(features))
    rng = np.random.default_rng(0)
    held = {
        c: sorted(rng.choice(n, size=min(16, n), replace=False).tolist()) for c in range(clients)
    }
    return HostSpec(tree, str(features), held)


def _host(spec: Any, stacks_of_one: bool) -> Any:
    from fuss_ray.federation.client import ClientHost

    host = ClientHost(spec)
    if stacks_of_one:  # the stacked engine with G = 1 (client_batch 1 is the per-client path)
        host.client_batch = 2
        host._groups = lambda client_ids: [[c] for c in sorted(client_ids)]  # type: ignore[method-assign]
    return host


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_engine(spec: Any, engine: int | str, clients: int, device: str) -> dict[str, Any]:
    """One warm-up round and one timed round of `clients` clients on one host."""
    import torch

    from fuss_ray.models.head import model_state

    host = _host(spec, engine == 1)
    broadcast = host.strategy.broadcast(model_state(host.model))
    ids = list(range(clients))
    host.train(broadcast, ids, 1)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    started = time.perf_counter()
    host.train(broadcast, ids, 2)
    _sync(device)
    seconds = time.perf_counter() - started
    steps = host.config.train.local_steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {
        "engine": engine,
        "clients": clients,
        "local_steps": steps,
        "seconds": seconds,
        "client_steps_per_s": clients * steps / seconds,
        "peak_device_mib": peak,
    }


def part_steps(sizes: Sizes, device: str, features: Path) -> list[dict[str, Any]]:
    rows = []
    for shape in ("benchmark", "canonical"):
        for engine in sizes.engines:
            g = 1 if engine == "per-client" else int(engine)
            clients = max(g, sizes.min_clients)
            if shape == "benchmark":
                spec = real_features(benchmark_tree(sizes.steps, g, device), clients, features)
            else:
                tree = canonical_tree(sizes.steps, g, device, clients, 1)
                spec = shared_maps(tree, clients, sizes.canonical_shape)
            row = {"shape": shape, **time_engine(spec, engine, clients, device)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def part_bits(sizes: Sizes, device: str, features: Path) -> dict[str, Any]:
    """The same clients in stacks of two sizes on the device: the same bits?"""
    import numpy as np

    from fuss_ray.models.head import model_state

    clients = 2 * max(sizes.bits_g)
    updates: list[Any] = []
    broadcast = None
    for g in sizes.bits_g:
        host = _host(
            real_features(benchmark_tree(sizes.steps, g, device), clients, features), g == 1
        )
        if broadcast is None:  # one start for both
            broadcast = host.strategy.broadcast(model_state(host.model))
        updates.append(host.train(broadcast, list(range(clients)), 1))
    worst = 0.0
    same = True
    for a, b in zip(*updates, strict=True):
        same &= a.loss == b.loss and bool(np.array_equal(a.occupancy, b.occupancy))
        for k in a.state:
            same &= bool(np.array_equal(a.state[k], b.state[k]))
            worst = max(worst, float(np.max(np.abs(a.state[k] - b.state[k]))))
    row = {
        "stacks": list(sizes.bits_g),
        "clients": clients,
        "same_bits": same,
        "max_abs_diff": worst,
    }
    print(json.dumps(row), flush=True)
    return row


def part_rounds(sizes: Sizes, device: str, actors: str) -> list[dict[str, Any]]:
    """Seconds per round of many clients x 1 step, k actors sharing the device: Ray
    actors, or (`actors: processes`, where Ray is not installed) one process per actor,
    each a client host, a barrier starting every round."""
    from fuss_ray.config import validate_config

    rows = []
    n = sizes.round_clients
    for k in sizes.round_actors:
        for g in sizes.round_batches:
            tree = canonical_tree(1, g, device, n, k)
            gpus = 1.0 / k if device == "cuda" else 0.0
            tree["federation"].update({"num_gpus": gpus, "num_cpus": 1.0})
            config = validate_config(tree)
            spec = shared_maps(config.to_dict(), n, sizes.canonical_shape)
            run = _ray_rounds if actors == "ray" else _process_rounds
            start_s, seconds = run(spec, config, n, k, sizes.rounds)
            row = {
                "clients": n,
                "local_steps": 1,
                "actors": k,
                "actors_are": actors,
                "client_batch": g,
                "actor_start_s": start_s,
                "s_per_round": statistics.median(seconds[1:]),
                "rounds_s": seconds,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _ray_rounds(spec: Any, config: Any, n: int, k: int, rounds: int) -> tuple[float, list[float]]:
    import bench_canonical as bc

    from fuss_ray.federation.executor import RayExecutor

    started = time.perf_counter()
    executor = RayExecutor(spec, config.federation)
    start_s = time.perf_counter() - started
    try:
        dim = spec.generated["shape"][0]
        return start_s, bc.run_rounds(executor, config, n, rounds, dim)["seconds"]
    finally:
        executor.shutdown()


def _process_rounds(
    spec: Any, config: Any, n: int, k: int, rounds: int
) -> tuple[float, list[float]]:
    """k processes of n/k clients each train `rounds` rounds from the same state, each
    round started together; a round lasts until the slowest has trained."""
    import multiprocessing as mp

    from fuss_ray.federation.executor import pack_clients

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(k + 1)
    queue = ctx.Queue()
    parts = pack_clients(list(range(n)), -(-n // k))
    started = time.perf_counter()
    procs = [
        ctx.Process(target=_host_process, args=(spec, part, rounds, barrier, queue))
        for part in parts
    ]
    for p in procs:
        p.start()
    barrier.wait()  # every host built
    start_s = time.perf_counter() - started
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        barrier.wait()  # the round starts
        barrier.wait()  # every host has trained its clients
        seconds.append(time.perf_counter() - began)
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"a host process failed (exit codes {failed})")
    return start_s, seconds


def _host_process(spec: Any, clients: list[int], rounds: int, barrier: Any, queue: Any) -> None:
    import dataclasses

    import torch

    from fuss_ray.federation.client import ClientHost
    from fuss_ray.models.head import model_state

    torch.set_num_threads(1)
    host = ClientHost(dataclasses.replace(spec, clients={c: spec.clients[c] for c in clients}))
    broadcast = host.strategy.broadcast(model_state(host.model))
    barrier.wait()
    for r in range(1, rounds + 1):
        barrier.wait()
        host.train(broadcast, clients, r)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        barrier.wait()


def part_strategies(sizes: Sizes, device: str, cache: Path, actors: str) -> list[dict[str, Any]]:
    """Two rounds of every strategy, two actors sharing the device (one host without
    Ray), stacks of 2."""
    from fuss_ray.config import validate_config
    from fuss_ray.federation.strategies import STRATEGIES
    from fuss_ray.simulation import run_simulation

    rows: list[dict[str, Any]] = []
    for name in sizes.strategies or sorted(STRATEGIES):
        if name == "ot-match" and importlib.util.find_spec("ot") is None:
            rows.append({"strategy": name, "skipped": "POT is not installed here"})
            print(json.dumps(rows[-1]), flush=True)
            continue
        tree: dict[str, Any] = {
            "name": f"gpu-check-{name}",
            "data": {"num_images": 32, "num_eval_images": 8, "num_classes": 3, "image_size": 64},
            "partition": {"kind": "dirichlet", "num_clients": 4, "alpha": 0.5, "min_images": 2},
            "features": {"input_size": 64, "label_size": 32, "cache_dir": str(cache)},
            "model": {"code_dim": 8},
            "train": {"rounds": 2, "local_steps": 4, "batch_size": 4},
            "federation": {
                "strategy": name,
                "executor": "ray" if actors == "ray" else "sequential",
                "clients_per_actor": 2,
                "client_batch": 2,
                "num_cpus": 0.5,
                "num_gpus": 0.5 if device == "cuda" else 0.0,
                "device": device,
                "server": {"actor": False},
            },
            "tracking": False,
        }
        started = time.perf_counter()
        summary = run_simulation(validate_config(tree), cache / "runs" / tree["name"], False)
        row = {
            "strategy": name,
            "final_miou": summary["final"]["miou"],
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def write(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        from fuss_ray.io import write_json

        write_json(path, result)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True, help="a real feature store")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--smoke", action="store_true", help="toy sizes, for the tests")
    parser.add_argument("--cache", type=Path, default=Path(".fuss_cache_gpu_check"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--actors",
        choices=["ray", "processes"],
        default=None,
        help="what shares the device in 'rounds' (default: Ray where it is installed)",
    )
    parser.add_argument(
        "--engines", nargs="+", default=None, help="'steps' only these: per-client and/or G"
    )
    args = parser.parse_args(argv)
    actors = args.actors or ("ray" if importlib.util.find_spec("ray") else "processes")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but no GPU is visible", file=sys.stderr)
        return 2
    if not (args.features / "meta.json").is_file():
        print(f"gpu_check: --features {args.features}: no feature store there", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # as a client actor trains
    sizes = SMOKE if args.smoke else FULL
    if args.engines:
        engines = tuple(e if e == "per-client" else int(e) for e in args.engines)
        sizes = dataclasses.replace(sizes, engines=engines)
    result: dict[str, Any] = {
        "command": "python tools/gpu_check.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "features": json.loads((args.features / "meta.json").read_text())["feature_shape"],
    }
    started = time.perf_counter()
    for part in args.parts:
        if part in ("strategies", "rounds") and actors == "ray":
            _ray()
        if part == "steps":
            result["steps"] = part_steps(sizes, args.device, args.features)
        elif part == "bits":
            result["bits"] = part_bits(sizes, args.device, args.features)
        elif part == "rounds":
            result["rounds"] = part_rounds(sizes, args.device, actors)
        else:
            cache = args.cache.resolve()
            result["strategies"] = part_strategies(sizes, args.device, cache, actors)
        result["seconds"] = time.perf_counter() - started
        write(args.json, result)
    return 0


def _ray() -> None:
    """A local Ray for the parts that need actors (joined where one already runs)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False)


if __name__ == "__main__":
    sys.exit(main())
