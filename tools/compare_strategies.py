"""Run every strategy over several seeds on one config and print a mean ± std table.

Usage:
    python tools/compare_strategies.py configs/quickstart.yaml --seeds 0 1 2 \
        --jobs 2 --out runs/compare --set federation.executor=sequential

Each cell is a separate `fuss-ray run` (so runs are isolated and can go in parallel); the
table goes to stdout and, with --markdown FILE, to a file; every summary stays under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fuss_ray.federation.strategies import STRATEGIES as REGISTRY

# Every registered strategy, baselines first and the upper reference last.
STRATEGIES = sorted(REGISTRY, key=lambda n: (n == "centralized", n != "local", n))


def _run(config: Path, strategy: str, seed: int, out: Path, extra: list[str]) -> dict[str, object]:
    target = out / f"{strategy}-seed{seed}"
    summary = target / "summary.json"
    if not summary.is_file():
        cmd = [
            sys.executable,
            "-m",
            "fuss_ray.cli.main",
            "run",
            str(config),
            "--quiet",
            "--out",
            str(target),
            "--set",
            f"federation.strategy={strategy}",
            "--set",
            f"seed={seed}",
        ]
        for item in extra:
            cmd += ["--set", item]
        subprocess.run(cmd, check=True)
    return json.loads(summary.read_text())  # type: ignore[no-any-return]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("config", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=STRATEGIES)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args()
    cells = [(s, seed) for seed in args.seeds for s in args.strategies]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(
            pool.map(lambda c: _run(args.config, c[0], c[1], args.out, args.overrides), cells)
        )
    rows = [
        "| strategy | mIoU | pixel acc. | random-assignment mIoU | runs |",
        "|---|---|---|---|---|",
    ]
    for strategy in args.strategies:
        mine = [r for (s, _), r in zip(cells, results, strict=True) if s == strategy]
        miou = [float(r["final"]["miou"]) for r in mine]  # type: ignore[index]
        acc = [float(r["final"]["pixel_acc"]) for r in mine]  # type: ignore[index]
        rnd = [float(r["reference"]["random_assignment"]["miou"]) for r in mine]  # type: ignore[index]

        def fmt(xs: list[float]) -> str:
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            return f"{statistics.mean(xs):.1f} ± {sd:.1f}"

        rows.append(f"| {strategy} | {fmt(miou)} | {fmt(acc)} | {fmt(rnd)} | {len(mine)} |")
    table = "\n".join(rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
