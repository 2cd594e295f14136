import numpy as np

from fuss_ray.federation.server_update import build_update
from fuss_ray.federation.strategies.fedcc import maximin_select

from .helpers import global_state, update


def test_maximin_starts_at_client0_centroid0_and_takes_farthest() -> None:
    pool = np.array([[0, 0], [1, 0], [10, 0], [0, 1]], dtype=np.float64)
    assert maximin_select(pool, 2).tolist() == [0, 2]
    # Third pick: (1,0) and (0,1) are both 1 from the set; argmax takes the first.
    assert maximin_select(pool, 3).tolist() == [0, 2, 1]


def test_maximin_strategy_uses_client_major_pool() -> None:
    s = build_update({"name": "fuss-maximin"}, 0)
    ups = [update(0, 5, [[0, 0], [1, 0]], head=2.0), update(1, 5, [[10, 0], [0, 1]])]
    out = s.aggregate(global_state([[0, 0], [0, 0]]), ups, 1)
    assert out["centroids"].tolist() == [[0, 0], [10, 0]]
    assert out["head.w"].tolist() == [1.0, 1.0]  # heads are still FedAvg'd


def test_kmeans_finds_the_two_groups() -> None:
    s = build_update({"name": "fuss-kmeans"}, 0)
    ups = [update(0, 1, [[0, 0.1], [10, 0.1]]), update(1, 1, [[10, -0.1], [0, -0.1]])]
    out = s.aggregate(global_state([[0, 0], [0, 0]]), ups, 1)
    got = sorted(out["centroids"].tolist())
    assert np.allclose(got, [[0, 0], [10, 0]], atol=1e-6)
    again = s.aggregate(global_state([[0, 0], [0, 0]]), ups, 1)
    assert np.array_equal(again["centroids"], out["centroids"])  # seeded
