"""Feature-extraction throughput (images per second) for each backbone fuss-ray names.

Random weights (throughput does not depend on their values), batches of uint8-range images
at the training side (224) and the paper's evaluation side (320), through the same
`DenseBackbone` the feature cache uses. The baseline is EfficientNet-Lite0 at 224 px,
measured in the same run: every row also gives its time per image relative to it.

    python tools/bench_extract.py                      # CPU, every backbone
    python tools/bench_extract.py --device cuda --batch 64 --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BACKBONES = (
    "tf_efficientnet_lite0",
    "dino_vits16",
    "dino_vits8",
    "dinov2_vits14",
    "dinov2_vits14_reg",
    "dino_vitb8",
)


def measure(backbone: str, side: int, batch: int, seconds: float, device: str) -> dict[str, Any]:
    """Images per second over at least `seconds` of timed batches after one warm-up batch."""
    import torch

    from fuss_ray.config import FeatureConfig
    from fuss_ray.features.backbone import create_backbone

    cfg = FeatureConfig(backbone=backbone, pretrained=False, weights=None, input_size=224)
    model = create_backbone(cfg).to(device)
    images = torch.rand(batch, 3, side, side, device=device) * 255
    with torch.no_grad():
        model(images)  # warm-up: allocation, kernel selection
        if device == "cuda":
            torch.cuda.synchronize()
        done, started = 0, time.perf_counter()
        while True:
            out = model(images)
            if device == "cuda":
                torch.cuda.synchronize()
            done += batch
            elapsed = time.perf_counter() - started
            if elapsed >= seconds and done >= 2 * batch:
                break
    return {
        "backbone": backbone,
        "side": side,
        "batch": batch,
        "images": done,
        "seconds": elapsed,
        "images_per_s": done / elapsed,
        "feature_shape": list(out.shape[1:]),
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--sides", nargs="+", type=int, default=[224, 320])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed per measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for backbone in args.backbones:
        for side in args.sides:
            row = measure(backbone, side, args.batch, args.seconds, args.device)
            rows.append(row)
            print(
                f"{backbone:24s} {side:4d} px  {row['images_per_s']:8.2f} img/s  "
                f"features {row['feature_shape']}",
                flush=True,
            )
    base = next(
        (r for r in rows if r["backbone"] == "tf_efficientnet_lite0" and r["side"] == 224), None
    )
    for r in rows:
        r["time_vs_lite0_224"] = base["images_per_s"] / r["images_per_s"] if base else None
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor()
    result = {
        "device": args.device,
        "device_name": device or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    print("| backbone | side | img/s | time per image vs Lite0 224 |")
    print("|---|---|---|---|")
    for r in rows:
        ratio = f"{r['time_vs_lite0_224']:.1f}x" if r["time_vs_lite0_224"] else "-"
        print(f"| {r['backbone']} | {r['side']} | {r['images_per_s']:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
