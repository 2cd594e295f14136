"""Test mIoU against simulated seconds for sync, sync + deadline and async (FedBuff).

Reads the JSON of tools/bench_async.py; one thin line per seed, the seed's 90% target as
a dotted line of the same colour as the synchronous curve it was taken from.

    python tools/plot_sync_async.py docs/bench/sync-async.json --out docs/sync_async.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the --json file of tools/bench_async.py")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fuss_ray.tracking.plots import save_png

    data = json.loads(args.results.read_text())
    modes = list(data["modes"])
    seeds = sorted({r["seed"] for r in data["runs"]})
    fig, axes = plt.subplots(
        1, len(seeds), figsize=(3.2 * len(seeds), 3.4), dpi=120, sharey=True, squeeze=False
    )
    colours = dict(zip(modes, ["tab:blue", "tab:orange", "tab:green"], strict=False))
    for ax, seed in zip(axes[0], seeds, strict=True):
        for r in (r for r in data["runs"] if r["seed"] == seed):
            t, m = zip(*r["curve"], strict=True)
            ax.plot(t, m, "o-", ms=2.5, lw=1.2, color=colours[r["mode"]], label=r["mode"])
        target = next(r["target_miou"] for r in data["runs"] if r["seed"] == seed)
        ax.axhline(target, color="grey", ls=":", lw=1, label="90% of sync's final")
        ax.set_title(f"seed {seed}")
        ax.set_xlabel("simulated seconds")
    axes[0][0].set_ylabel("test mIoU")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Heavy-tailed devices with churn: accuracy against simulated time")
    save_png(fig, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
