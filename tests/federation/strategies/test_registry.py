import numpy as np
import pytest

from fuss_ray.config import strategy_params
from fuss_ray.data.partition import Partition
from fuss_ray.federation.buffer import Buffer
from fuss_ray.federation.reduction import reduce_updates
from fuss_ray.federation.server_update import build_update
from fuss_ray.federation.strategies import STRATEGIES, async_strategies, build_strategy
from fuss_ray.federation.strategies.fedprox import Proximal
from fuss_ray.federation.strategies.local import OwnModel
from fuss_ray.federation.strategies.moon import Contrastive

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


def test_each_strategy_owns_its_client_objective() -> None:
    prox = build_strategy({"name": "fedprox", "mu": 0.01}, 0).client_objective()
    assert isinstance(prox, Proximal) and prox.mu == 0.01
    moon = build_strategy({"name": "moon", "tau": 0.2, "weight": 2.0}, 0).client_objective()
    assert isinstance(moon, Contrastive) and (moon.tau, moon.weight) == (0.2, 2.0)
    assert isinstance(build_strategy({"name": "local"}, 0).client_objective(), OwnModel)
    plain = build_strategy({"name": "fedavg"}, 0).client_objective()
    assert type(plain).__name__ == "ClientObjective" and plain.kept_states == 0
    assert (moon.kept_states, OwnModel.kept_states) == (1, 1)


def test_special_strategies_say_what_they_are_in_their_own_hooks() -> None:
    """Local-only scores each client's own model and moves nothing global; centralised
    training pools every image on one client; neither has an asynchronous form."""
    local = build_update({"name": "local"}, 0)
    g = global_state([[0, 0]])
    mine = update(3, 4, [[1, 2]], head=5.0)
    assert local.aggregate(g, [mine], 1)["head.w"].tolist() == g["head.w"].tolist()
    reduced = reduce_updates(local, g, local.grid(g, 4), [mine], None)
    kept = local.strategy.run_shape().client_models(Buffer.round(g, 0, reduced))
    assert list(kept) == [3] and kept[3]["head.w"].tolist() == [5.0, 5.0]
    scored = local.strategy.run_shape().scored_models(g, kept, [1, 3])
    assert scored[1] is g and scored[3] is kept[3]
    assert list(
        build_strategy({"name": "fedavg"}, 0).run_shape().scored_models(g, kept, [1, 3])
    ) == [None]
    central = build_strategy({"name": "centralized"}, 0)
    pooled = central.run_shape().partition(Partition([np.array([0, 2]), np.array([1])]), 3)
    assert [c.tolist() for c in pooled.clients] == [[0, 1, 2]]
    assert central.run_shape().budget() == {"centralized": "per_model"}
    assert not central.runs_asynchronously() and not local.strategy.runs_asynchronously()
    assert build_strategy({"name": "ot-match"}, 0).runs_asynchronously()
    only = update(0, 4, [[1, 2]], head=5.0)
    out = build_update({"name": "centralized"}, 0).aggregate(global_state([[0, 0]]), [only], 1)
    assert out["centroids"].tolist() == [[1, 2]] and out["head.w"].tolist() == [5.0, 5.0]


def test_a_strategy_author_has_six_hooks_one_flag_and_one_memory() -> None:
    """The whole interface a strategy may override (Flower's Strategy has six abstract
    methods; pfl-research's algorithms two hooks): growing it is a design decision."""
    from fuss_ray.federation.strategies.base import Strategy

    hooks = {
        name
        for name, value in vars(Strategy).items()
        if callable(value) and not name.startswith("_")
    } - {"attach", "runs_asynchronously"}  # told by the server; derived, `@final`
    assert hooks == {
        "client_objective",
        "broadcast",
        "scales",
        "contribution",
        "reduce_centroids",
        "run_shape",
    }
    assert Strategy.__abstractmethods__ == frozenset({"reduce_centroids"})
    # Whether the one centroid rule also merges FedBuff buffers: a flag, not a second rule.
    assert Strategy.asynchronous is True and not callable(Strategy.asynchronous)
    # Server memory is plain named arrays: SCAFFOLD keeps its control variate there.
    assert build_strategy({"name": "scaffold"}, 0).memory == {}
    # Other tests may register strategies of their own; the built-ins are these.
    runs_async = set(async_strategies())
    assert {"fedavg", "fedprox", "moon", "fuss-maximin", "fuss-kmeans", "ot-match"} <= runs_async
    assert not {"scaffold", "centralized", "local"} & runs_async
