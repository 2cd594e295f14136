"""The paper's preprocessing options, each on and off, on the packaged nuclei image.

Five-crop (training) x evaluation side (224 px with 112 px labels, or the paper's 320 px
with 320 px labels), and within each run the final scores plain, with flip TTA, with the
dense CRF and with both. Same pipeline and schedule as tests/test_packaged_real.py.

    python tools/protocol_options.py --seeds 0 1 2 --json docs/bench/protocol-options.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(
    five_crop: bool, eval_side: int, seed: int, cache: Path, out: Path, pretrained: bool = True
) -> dict[str, Any]:
    from fuss_ray.config import validate_config
    from fuss_ray.simulation import run_simulation

    cfg = validate_config(
        {
            "name": "protocol-options",
            "seed": seed,
            "data": {"dataset": "packaged-real", "sources": ["nuclei"]},
            "partition": {"kind": "iid", "num_clients": 2},
            "features": {
                "pretrained": pretrained,
                "cache_dir": str(cache),
                "five_crop": five_crop,
                "eval_input_size": eval_side,
                "label_size": 112 if eval_side == 224 else eval_side,
            },
            "train": {"rounds": 2, "local_steps": 40},
            "federation": {"executor": "sequential"},
            "evaluation": {"flip_tta": pretrained, "crf": pretrained},
            "checkpoint": {"every": 0},
            "tracking": "off",
        }
    )
    summary = run_simulation(cfg, out, show_progress=False)
    final = summary["final"]
    variants: dict[str, Any] = final.get("variants") or {"plain": final}
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, default=Path(".fuss_cache"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for five_crop in (False, True):
            for side in (224, 320):
                per_seed = []
                for seed in args.seeds:
                    out = Path(tmp) / f"{five_crop}-{side}-{seed}"
                    per_seed.append(run(five_crop, side, seed, args.cache, out))
                    print(five_crop, side, seed, per_seed[-1], flush=True)
                for variant in per_seed[0]:
                    values = [v[variant]["miou"] for v in per_seed]
                    rows.append(
                        {
                            "features": "pretrained",
                            "five_crop": five_crop,
                            "eval_side": side,
                            "variant": variant,
                            "miou": values,
                            "mean": statistics.mean(values),
                            "std": statistics.pstdev(values),
                        }
                    )
        # The same pipeline on randomly initialised features: what pretraining is worth.
        random_runs = [
            run(False, 224, seed, args.cache, Path(tmp) / f"random-{seed}", pretrained=False)
            for seed in args.seeds
        ]
        values = [v["plain"]["miou"] for v in random_runs]
        rows.append(
            {
                "five_crop": False,
                "eval_side": 224,
                "variant": "plain",
                "features": "random",
                "miou": values,
                "mean": statistics.mean(values),
                "std": statistics.pstdev(values),
            }
        )
    if args.json is not None:
        command = "python tools/protocol_options.py --seeds " + " ".join(map(str, args.seeds))
        payload = {"command": command, "seeds": args.seeds, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=1))
    print("| five-crop | eval side | test-time | mIoU (mean ± std) | per seed |")
    print("|---|---|---|---|---|")
    for r in rows:
        seeds = ", ".join(f"{v:.1f}" for v in r["miou"])
        print(
            f"| {'on' if r['five_crop'] else 'off'} | {r['eval_side']} | {r['variant']} | "
            f"{r['mean']:.1f} ± {r['std']:.1f} | {seeds} |"
        )


if __name__ == "__main__":
    main()
