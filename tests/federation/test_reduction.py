"""Host-side reduction: exact integer sums, so any packing of clients gives the same bits."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from fuss_ray.config import validate_config
from fuss_ray.federation.buffer import Buffer
from fuss_ray.federation.checkpoint import load_tree
from fuss_ray.federation.reduction import Reduced, grid_shifts, reduce_updates, value_bound
from fuss_ray.federation.server_update import build_update
from fuss_ray.federation.strategies import STRATEGIES, ClientUpdate
from fuss_ray.simulation import run_simulation

from ..conftest import tiny_config_dict


def _updates(n: int, seed: int = 0) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n):
        state = {
            "head.w": rng.normal(0, 0.1, (7, 5)).astype(np.float32),
            "centroids": rng.normal(0, 1, (3, 5)).astype(np.float32),
        }
        occ = rng.dirichlet(np.ones(3))
        out.append(ClientUpdate(c, int(rng.integers(1, 30)), state, occ, float(c)))
    return out


GLOBAL = {"head.w": np.zeros((7, 5), np.float32), "centroids": np.eye(3, 5, dtype=np.float32)}


@pytest.mark.parametrize("name", ["fedavg", "ot-match", "fuss-maximin"])
def test_any_packing_and_order_gives_the_same_bits(name: str) -> None:
    strategy = build_update({"name": name}, 0)
    ups = _updates(6)
    shifts = grid_shifts(strategy.summand_references(GLOBAL), sum(u.num_samples for u in ups))
    whole = reduce_updates(strategy, GLOBAL, shifts, ups, None)
    expected = strategy.merge(Buffer.round(GLOBAL, 0, whole), 1)
    for packing in ([[0, 1, 2], [3, 4, 5]], [[5], [0, 3], [1, 2, 4]], [[i] for i in range(6)]):
        parts = [
            reduce_updates(strategy, GLOBAL, shifts, [ups[i] for i in g], None) for g in packing
        ]
        for order in itertools.permutations(parts):
            merged = Reduced(shifts=shifts)
            for part in order:
                merged = merged.merge(part)
            out = build_update({"name": name}, 0).merge(Buffer.round(GLOBAL, 0, merged), 1)
            for k in expected:
                assert np.array_equal(out[k], expected[k]), (name, packing, k)


def test_fixed_point_mean_is_the_weighted_mean() -> None:
    ups = _updates(50, seed=3)
    weights = np.asarray([u.num_samples for u in ups], dtype=np.float64)
    strategy = build_update({"name": "fedavg"}, 0)
    out = strategy.aggregate(GLOBAL, ups, 1)
    for key in ("head.w", "centroids"):
        exact = sum(w * u.state[key].astype(np.float64) for u, w in zip(ups, weights, strict=True))
        reference = (exact / weights.sum()).astype(np.float32)
        # at most one float32 rounding step apart, never more
        assert np.max(np.abs(out[key] - reference)) <= np.max(np.spacing(np.abs(reference)))


def test_grid_cannot_overflow_and_diverged_updates_are_rejected() -> None:
    assert value_bound(np.zeros(3)) == 1024.0 and value_bound(np.full(2, -3.0)) == 3072.0
    shifts = grid_shifts({"w": np.ones(4)}, total_weight=10**6)
    assert 1024.0 * 10**6 * 2.0 ** shifts["w"] <= 2.0**61
    ups = _updates(3)
    ups[1].state["head.w"][0, 0] = 5000.0  # 5000x beyond the global's scale: diverged
    strategy = build_update({"name": "fedavg"}, 0)
    shifts = grid_shifts(strategy.summand_references(GLOBAL), 100)
    reduced = reduce_updates(strategy, GLOBAL, shifts, ups, None)
    assert reduced.rejected() == {1: "range"}
    assert reduced.weight == ups[0].num_samples + ups[2].num_samples


def test_every_strategy_reduces_and_merges() -> None:
    for name in sorted(STRATEGIES):
        strategy = build_update({"name": name}, 0)
        ups = _updates(1 if name == "centralized" else 4)  # it holds one client
        out = strategy.aggregate(GLOBAL, ups, 1)
        assert set(out) == set(GLOBAL) and all(np.isfinite(v).all() for v in out.values())


@pytest.mark.ray
def test_ray_and_sequential_agree_after_every_round_whatever_the_packing(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    """Global states of every round, bit for bit: one host, four actors, two actors."""

    def run(executor: str, per_actor: int) -> list[dict[str, np.ndarray]]:
        tree = tiny_config_dict(
            cache_dir,
            **{
                "tracking": False,
                "train.rounds": 3,
                "checkpoint.keep": 10,
                "federation.strategy": "ot-match",
                "federation.executor": executor,
                "federation.clients_per_actor": per_actor,
                "federation.num_cpus": 0.5,
            },
        )
        out = tmp_path / f"{executor}-{per_actor}"
        run_simulation(validate_config(tree), out, show_progress=False)
        rounds = sorted((out / "checkpoints").glob("round-*"))
        assert len(rounds) == 3
        return [load_tree(r / "server.npz")["global"] for r in rounds]

    reference = run("sequential", 4)
    for per_actor in (1, 3):
        states = run("ray", per_actor)
        for r, (a, b) in enumerate(zip(reference, states, strict=True), start=1):
            for k in a:
                assert np.array_equal(a[k], b[k]), (per_actor, r, k)
