"""Round time against N from tools/bench_canonical.py results: sequential, Ray, the ideal.

python tools/plot_canonical.py docs/bench/canonical-*.json --peer docs/bench/peer-flower.json \
    --out docs/canonical_rounds.png

With `--peer`, the peer simulator's figures (Flower, 2 actors, measured side by side on the
same machine kind) are drawn beside fuss-ray's, as copied into that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="--json files of bench_canonical")
    parser.add_argument("--peer", type=Path, default=None, help="docs/bench/peer-flower.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fuss_ray.tracking.plots import save_png

    rows = sorted(
        (r for path in args.results for r in json.loads(path.read_text())["results"]),
        key=lambda r: r["clients"],
    )
    n = [r["clients"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(n, [r["sequential_s_per_round"] for r in rows], "o-", label="sequential executor")
    ax.plot(n, [r["ray_s_per_round"] for r in rows], "s-", label="Ray executor, 2 actors")
    ax.plot(n, [r["ideal_s_per_round"] for r in rows], "k--", label="ideal (sequential / 2)")
    if args.peer is not None:
        peer = json.loads(args.peer.read_text())["rows"]
        ax.plot(
            [r["clients"] for r in peer],
            [r["flower_2_actors_s_per_round_side_by_side"] for r in peer],
            "^:",
            color="tab:red",
            label="Flower 1.42, 2 actors (team's measurement)",
        )
    for r in rows:
        ax.annotate(
            f"{100 * r['share_of_ideal']:.0f}%",
            (r["clients"], r["ray_s_per_round"]),
            textcoords="offset points",
            xytext=(6, -12),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(n, [f"{c}\n({r['local_steps']} steps)" for c, r in zip(n, rows, strict=True)])
    ax.set_xlabel("clients per round (local steps)")
    ax.set_ylabel("seconds per round (median)")
    ax.set_title("Canonical workload on 2 cores: share of the ideal")
    ax.legend()
    save_png(fig, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
