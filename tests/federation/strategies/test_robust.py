import numpy as np

from fuss_ray.federation.reduction import screen_updates
from fuss_ray.federation.server_update import ServerSettings, build_update

from .helpers import global_state, update


def test_median_and_trimmed_mean_ignore_an_outlier() -> None:
    ups = [update(i, 1, [[0, 0]], head=h) for i, h in enumerate([1.0, 2.0, 3.0, 4.0, 1000.0])]
    g = global_state([[0, 0]])
    median = build_update(
        {"name": "fedavg"}, 0, ServerSettings(head_aggregation="median")
    ).aggregate(g, ups, 1)
    assert median["head.w"].tolist() == [3.0, 3.0]
    trimmed = build_update(
        {"name": "fedavg"}, 0, ServerSettings(head_aggregation="trimmed_mean", trim_fraction=0.2)
    ).aggregate(g, ups, 1)
    assert trimmed["head.w"].tolist() == [3.0, 3.0]  # drops 1 and 1000, mean of 2, 3, 4
    mean = build_update({"name": "fedavg"}, 0).aggregate(g, ups, 1)
    assert mean["head.w"][0] == np.float32(202.0)


def test_screen_rejects_nan_inf_and_far_updates() -> None:
    g = global_state([[0, 0]])
    good = update(0, 1, [[0.1, 0]], head=0.5)
    nan = update(1, 1, [[np.nan, 0]])
    inf = update(2, 1, [[0, 0]], head=np.inf)
    far = update(3, 1, [[100, 0]])
    kept, rejected = screen_updates(g, [good, nan, inf, far], max_norm=10.0)
    assert [u.client_id for u in kept] == [0]
    assert rejected == {1: "non-finite", 2: "non-finite", 3: "norm"}
    kept, rejected = screen_updates(g, [good, far], max_norm=None)
    assert len(kept) == 2 and not rejected
