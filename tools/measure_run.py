"""Run one `fuss-ray run` command and keep what it measured as JSON under docs/.

The figures of docs/results.md and docs/benchmarks.md about whole runs (the quickstart,
200 and 1000 clients, 10,000 clients) come from files this writes: the command as run,
the machine, the wall time, the peak resident memory of the whole process tree (driver,
Ray's processes, actors), and the run's own summary (per-round scores and seconds,
final and validation scores, references).

    python tools/measure_run.py --json docs/bench/quickstart.json -- \\
        fuss-ray run configs/quickstart.yaml --out runs/quickstart --quiet
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_canonical import cpu_model
from peak_memory import run_with_peak


def kept(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without its config and per-client timelines (they are in the run folder)."""
    rounds = [
        {k: v for k, v in r.items() if k not in ("timeline",)} for r in summary.get("rounds", [])
    ]
    out = {k: v for k, v in summary.items() if k not in ("config", "rounds", "client_sizes")}
    out["rounds"] = rounds
    sizes = summary.get("client_sizes") or []
    if sizes:
        out["client_sizes"] = {"min": min(sizes), "max": max(sizes), "n": len(sizes)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if "--out" not in argv:
        sys.exit("measure_run: give the run an --out folder, to read its summary.json")
    out = Path(argv[argv.index("--out") + 1])
    code, peak, wall = run_with_peak(argv)
    if code != 0:
        return code
    summary = json.loads((out / "summary.json").read_text())
    payload = {
        "command": shlex.join(argv),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            # The float kernels torch picks depend on the CPU, and with them the last
            # digits of every score: a run reproduces bit for bit on the same CPU model.
            "cpu": cpu_model(),
        },
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": wall,
        "peak_rss_mib": peak / 2**20,
        "summary": kept(summary),
    }
    args.json.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wall {wall:.0f} s, peak {peak / 2**20:.0f} MiB -> {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
