import numpy as np

from fuss_ray.federation.server_update import ServerSettings, build_update

from .helpers import global_state, update


def test_weighted_by_samples_index_wise() -> None:
    s = build_update({"name": "fedavg"}, 0)
    ups = [update(0, 1, [[0, 0], [4, 0]], head=0.0), update(1, 3, [[4, 0], [0, 0]], head=4.0)]
    out = s.aggregate(global_state([[0, 0], [0, 0]]), ups, 1)
    assert out["head.w"].tolist() == [3.0, 3.0]
    # Index-wise: the permuted client drags both centroids to the middle (the failure mode).
    assert np.allclose(out["centroids"], [[3, 0], [1, 0]])


def test_server_learning_rate_and_momentum() -> None:
    s = build_update({"name": "fedavg"}, 0, ServerSettings(server_lr=0.5, server_momentum=0.9))
    g = global_state([[0, 0]])
    ups = [update(0, 1, [[0, 0]], head=2.0)]
    out = s.aggregate(g, ups, 1)
    assert out["head.w"].tolist() == [1.0, 1.0]  # 0 + 0.5 * (2 - 0)
    out2 = s.aggregate(out, ups, 2)
    # velocity = 0.9 * 2 + (2 - 1) = 2.8 -> 1 + 0.5 * 2.8
    assert np.allclose(out2["head.w"], [2.4, 2.4])
