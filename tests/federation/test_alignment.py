"""Centroids that clients hold in orders of their own, and how the server sees it."""

from pathlib import Path

import numpy as np
import pytest

from fuss_ray.config import validate_config
from fuss_ray.federation.client import centroid_order
from fuss_ray.federation.reduction import alignment
from fuss_ray.simulation import run_simulation

from ..conftest import tiny_config_dict


def test_alignment_by_hand() -> None:
    g = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    assert alignment(g + 1.0, g) == (True, pytest.approx(np.sqrt(2)), pytest.approx(np.sqrt(2)))
    swapped = g[[1, 0, 2]]
    aligned, index_gap, matched_gap = alignment(swapped, g)
    assert not aligned and matched_gap == 0.0
    assert index_gap == pytest.approx((10.0 + 10.0 + 0.0) / 3)


def test_each_client_has_its_own_fixed_order() -> None:
    a, b = centroid_order(0, 1, 27), centroid_order(0, 2, 27)
    assert sorted(a.tolist()) == list(range(27)) and not np.array_equal(a, b)
    assert np.array_equal(a, centroid_order(0, 1, 27))  # the same every round


def test_private_orders_separate_matching_from_index_averaging(
    cache_dir: Path, tmp_path: Path
) -> None:
    """With every client's centroids in its own order, index-wise averaging pairs the wrong
    centroids (index gap well above matched gap), OT matching's plans are not the identity,
    and the two strategies no longer give the same numbers."""
    runs = {}
    for name in ("fedavg", "ot-match"):
        tree = tiny_config_dict(
            cache_dir,
            **{
                "federation.strategy": name,
                "model.centroid_order": "per_client",
                "train.rounds": 3,
                "tracking": False,
            },
        )
        runs[name] = run_simulation(validate_config(tree), tmp_path / name, show_progress=False)
    for summary in runs.values():
        first = summary["rounds"][0]["alignment"]
        assert first["misaligned"] >= 0.5  # most clients' plans are not the identity
        assert first["gap_index"] > first["gap_matched"]
        assert summary["alignment"]["misaligned"] > 0
    assert runs["fedavg"]["final"] != runs["ot-match"]["final"]
    shared = tiny_config_dict(cache_dir, **{"federation.strategy": "ot-match", "tracking": False})
    aligned = run_simulation(validate_config(shared), tmp_path / "shared", show_progress=False)
    assert aligned["rounds"][0]["alignment"]["misaligned"] == 0.0  # one shared init: aligned
