import numpy as np
import pytest

from fuss_ray.federation.server_update import build_update

from .helpers import global_state, update

GLOBAL = [[0.0, 0.0], [10.0, 0.0]]


def _clients() -> list:  # type: ignore[type-arg]
    # Client 0 has its centroids in swapped order; both are offset vertically by +-1.
    return [
        update(0, 1, [[10, 1], [0, 1]], occupancy=[0.5, 0.5]),
        update(1, 1, [[0, -1], [10, -1]], occupancy=[0.5, 0.5]),
    ]


def test_exact_matching_undoes_the_permutation() -> None:
    s = build_update({"name": "ot-match"}, 0)
    out = s.aggregate(global_state(GLOBAL), _clients(), 1)
    assert np.allclose(out["centroids"], GLOBAL, atol=1e-6)
    fedavg = build_update({"name": "fedavg"}, 0).aggregate(global_state(GLOBAL), _clients(), 1)
    assert np.allclose(fedavg["centroids"], [[5, 0], [5, 0]])  # what matching avoids


def test_sinkhorn_with_occupancy_masses() -> None:
    s = build_update(
        {"name": "ot-match", "method": "sinkhorn", "masses": "occupancy", "epsilon": 0.01}, 0
    )
    out = s.aggregate(global_state(GLOBAL), _clients(), 1)
    assert np.allclose(out["centroids"], GLOBAL, atol=1e-2)


def test_weights_by_sample_count() -> None:
    s = build_update({"name": "ot-match"}, 0)
    ups = [update(0, 3, [[0, 1], [10, 1]]), update(1, 1, [[0, -3], [10, -3]])]
    out = s.aggregate(global_state(GLOBAL), ups, 1)
    assert out["centroids"][:, 1] == pytest.approx([0.0, 0.0])


def test_exact_uniform_plan_is_the_plan_pot_returns() -> None:
    """The assignment shortcut gives POT's `emd` plan, entry for entry, and the aligned
    centroids to the bit (on costs from POT's own `dist`, as before the shortcut)."""
    import ot

    from fuss_ray.federation.strategies.ot_match import transport_plan

    rng = np.random.default_rng(0)
    for count, dim in [(2, 2), (5, 70), (12, 70), (27, 8)]:
        for _ in range(10):
            mine, target = rng.standard_normal((2, count, dim))
            mass = np.ones(count) / count
            plan = transport_plan(mine, target, mass, "exact", 0.05)
            cost = ot.dist(mine, target, metric="sqeuclidean")
            pot = ot.emd(mass, np.full(count, 1.0 / count), cost / cost.max())
            assert np.array_equal(plan, pot)
            aligned = (plan / plan.sum(axis=0, keepdims=True)).T @ mine
            assert np.array_equal(aligned, (pot / pot.sum(axis=0, keepdims=True)).T @ mine)
