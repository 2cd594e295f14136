"""On real microscopy pixels, pretrained features must beat random ones by a clear margin.

The project's whole pipeline (tiling, extraction, two federated clients, FUSS maximin,
the unsupervised evaluation) on stardist's nuclei image; the margin is in docs/results.md.
"""

from pathlib import Path
from typing import Any

import pytest

from fuss_ray.config import validate_config
from fuss_ray.simulation import run_simulation

MARGIN = 10.0  # mIoU points; measured 23.4 (62.5 vs 39.0, seed 0)


def nuclei_config(cache_dir: Path, pretrained: bool, seed: int = 0) -> dict[str, Any]:
    return {
        "name": f"nuclei-{'pretrained' if pretrained else 'random'}",
        "seed": seed,
        "data": {"dataset": "packaged-real", "sources": ["nuclei"]},
        "partition": {"kind": "iid", "num_clients": 2},
        "features": {"pretrained": pretrained, "cache_dir": str(cache_dir)},
        "train": {"rounds": 2, "local_steps": 40},
        "federation": {"executor": "sequential", "strategy": "fuss-maximin"},
        "checkpoint": {"every": 0},
        "tracking": "off",
    }


@pytest.mark.slow
def test_pretrained_features_beat_random_features_on_nuclei(
    cache_dir: Path, tmp_path: Path
) -> None:
    scores = {}
    for pretrained in (True, False):
        cfg = validate_config(nuclei_config(cache_dir, pretrained))
        summary = run_simulation(cfg, tmp_path / str(pretrained), show_progress=False)
        scores[pretrained] = summary["final"]["miou"]
    assert scores[True] - scores[False] >= MARGIN, scores
    assert scores[True] > 55.0  # well above predicting one class (39.0 here)
