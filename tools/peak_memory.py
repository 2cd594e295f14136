"""Run a command and report the peak total RSS of it and all its descendants.

Ray actors are children of the raylet, which `ray.init` starts under the driver, so the
process tree covers the whole local simulation. Usage:
    python tools/peak_memory.py -- fuss-ray run configs/many_clients.yaml
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_with_peak(argv: list[str]) -> tuple[int, int, float]:
    """Run a command; its exit code, the peak RSS of its process tree, its wall seconds."""
    started = time.perf_counter()
    child = subprocess.Popen(argv)
    ps = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.5)
    return child.returncode, peak, time.perf_counter() - started


def main() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(__doc__)
        return 2
    code, peak, wall = run_with_peak(argv)
    print(
        f"peak_rss_total_mib={peak / 2**20:.0f} wall_s={wall:.1f} exit={code}",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
