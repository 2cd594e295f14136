"""The Ray executor must be a pure change of where clients run, not of what they compute."""

from pathlib import Path

import numpy as np
import pytest

from fuss_ray.config import validate_config
from fuss_ray.errors import UserError
from fuss_ray.federation.client import HostSpec
from fuss_ray.federation.executor import RayExecutor, SequentialExecutor, pack_clients
from fuss_ray.federation.strategies import build_strategy
from fuss_ray.simulation import host_spec, initial_state, prepare

from ..conftest import tiny_config_dict


def _spec(cache_dir: Path, strategy: str = "fuss-maximin") -> tuple[HostSpec, dict]:  # type: ignore[type-arg]
    cfg = validate_config(tiny_config_dict(cache_dir, **{"federation.strategy": strategy}))
    prep = prepare(cfg, show_progress=False)
    s = build_strategy(cfg.federation.strategy, cfg.seed)
    spec = host_spec(cfg, prep, s)
    return spec, initial_state(cfg, prep.train_store.feature_dim)


def test_pack_clients() -> None:
    assert pack_clients([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]


@pytest.mark.ray
def test_ray_matches_sequential_bit_for_bit(cache_dir: Path, ray_session: None) -> None:
    spec, state = _spec(cache_dir, "moon")
    seq = SequentialExecutor(spec)
    fed = validate_config(spec.config).federation.model_copy(
        update={"clients_per_actor": 1, "num_cpus": 0.5}
    )
    par = RayExecutor(spec, fed)
    try:
        strategy = build_strategy({"name": "moon"}, 0)
        s_seq, s_par = dict(state), dict(state)
        for r in (1, 2):
            u_seq = seq.train(s_seq, [0, 1, 2, 3], r)
            u_par = par.train(s_par, [3, 1, 0, 2], r)
            assert [u.client_id for u in u_par] == [0, 1, 2, 3]
            for a, b in zip(u_seq, u_par, strict=True):
                assert a.loss == b.loss
                for k in a.state:
                    assert np.array_equal(a.state[k], b.state[k]), k
            s_seq = strategy.aggregate(s_seq, u_seq, r)
            s_par = strategy.aggregate(s_par, u_par, r)
        for k in s_seq:
            assert np.array_equal(s_seq[k], s_par[k])
    finally:
        par.shutdown()


@pytest.mark.ray
def test_refuses_more_actors_than_cpus(cache_dir: Path, ray_session: None) -> None:
    spec, _ = _spec(cache_dir)
    fed = validate_config(spec.config).federation.model_copy(
        update={"clients_per_actor": 1, "num_cpus": 1.0}
    )
    with pytest.raises(UserError, match="clients_per_actor"):
        RayExecutor(spec, fed)
