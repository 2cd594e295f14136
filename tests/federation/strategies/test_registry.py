import pytest

from fuss_ray.federation.strategies import STRATEGIES, build_strategy, strategy_params

from .helpers import global_state, update


def test_all_paper_strategies_are_registered() -> None:
    assert set(STRATEGIES) >= {
        "local",
        "fedavg",
        "fedprox",
        "moon",
        "fuss-maximin",
        "fuss-kmeans",
        "ot-match",
        "centralized",
    }


def test_params_are_validated() -> None:
    assert strategy_params({"name": "fedprox"})["mu"] == 0.001
    with pytest.raises(ValueError, match="no setting 'tau'"):
        strategy_params({"name": "fedprox", "tau": 1})
    with pytest.raises(ValueError, match=r"strategy\.mu"):
        strategy_params({"name": "fedprox", "mu": -1})
    with pytest.raises(ValueError, match="must be one of"):
        strategy_params({"name": "fedsgd"})


def test_local_objectives() -> None:
    assert build_strategy({"name": "fedprox", "mu": 0.01}, 0).local_objective().prox_mu == 0.01
    moon = build_strategy({"name": "moon", "tau": 0.2, "weight": 2.0}, 0).local_objective()
    assert (moon.moon_tau, moon.moon_weight) == (0.2, 2.0)
    assert build_strategy({"name": "fedavg"}, 0).local_objective().prox_mu == 0.0


def test_local_and_centralized_flags() -> None:
    assert not STRATEGIES["local"].federated
    assert STRATEGIES["centralized"].pooled
    only = update(0, 4, [[1, 2]], head=5.0)
    out = build_strategy({"name": "centralized"}, 0).aggregate(global_state([[0, 0]]), [only], 1)
    assert out["centroids"].tolist() == [[1, 2]] and out["head.w"].tolist() == [5.0, 5.0]
