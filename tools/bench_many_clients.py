"""How start-up, rounds and memory grow from 1,000 to 10,000 logical clients.

Each size runs `configs/ten_thousand_clients.yaml` with N clients of 3 scenes each, 1% of
them training per round, in 2 Ray actors, as its own `fuss-ray run` process (with its own
local Ray) under `tools/measure_run.py`, which records the whole process tree's peak
memory. Features are extracted first, once per size (`fuss-ray extract`), so that a run's
set-up time is reading the cache, not building it. Start-up is the run's `timings`:
`setup_s` (data, partition, features from the cache) and `start_s` (the actors up).

    python tools/bench_many_clients.py --json docs/bench/many-clients-scaling.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "ten_thousand_clients.yaml"


def sets(clients: int) -> list[str]:
    return [f"partition.num_clients={clients}", f"data.num_images={3 * clients}"]


def measure(clients: int, out: Path) -> dict[str, Any]:
    overrides = [x for s in sets(clients) for x in ("--set", s)]
    fuss = str(Path(sys.executable).with_name("fuss-ray"))
    subprocess.run([fuss, "extract", str(CONFIG), "--quiet", *overrides], check=True)
    record = out / f"run-{clients}.json"
    run = [fuss, "run", str(CONFIG), "--out", str(out / f"run-{clients}"), "--quiet", *overrides]
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "measure_run.py"), "--json", str(record), "--", *run],
        check=True,
    )
    measured = json.loads(record.read_text())
    summary = measured["summary"]
    rounds = [r["seconds"] for r in summary["rounds"]]
    return {
        "clients": clients,
        "images": 3 * clients,
        "clients_per_round": summary["clients_per_round"],
        "setup_s": summary["timings"]["setup_s"],
        "start_s": summary["timings"]["start_s"],
        "round_s": rounds,
        "median_round_s": sorted(rounds)[len(rounds) // 2],
        "wall_s": measured["wall_seconds"],
        "peak_rss_mib": measured["peak_rss_mib"],
        "miou": [r["miou"] for r in summary["rounds"]],
        "command": measured["command"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.clients:
            rows.append(measure(n, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    if args.json is not None:
        from fuss_ray.io import write_json

        write_json(
            args.json,
            {
                "command": "python tools/bench_many_clients.py",
                "config": str(CONFIG.name),
                "rows": rows,
            },
        )


if __name__ == "__main__":
    main()
