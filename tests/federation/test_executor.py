"""The Ray executor must be a pure change of where clients run, not of what they compute."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fuss_ray.config import validate_config
from fuss_ray.errors import SimulationError, UserError
from fuss_ray.federation.client import HostSpec
from fuss_ray.federation.executor import (
    RayExecutor,
    SequentialExecutor,
    gather_round,
    pack_clients,
)
from fuss_ray.federation.server_update import build_update
from fuss_ray.federation.strategies import ClientUpdate
from fuss_ray.federation.types import Broadcast
from fuss_ray.simulation import host_spec, initial_state, prepare

from ..conftest import tiny_config_dict


def _spec(cache_dir: Path, strategy: str = "fuss-maximin") -> tuple[HostSpec, dict]:  # type: ignore[type-arg]
    cfg = validate_config(tiny_config_dict(cache_dir, **{"federation.strategy": strategy}))
    prep = prepare(cfg, show_progress=False)
    spec = host_spec(cfg, prep)
    return spec, initial_state(cfg, prep.train_store.feature_dim)


def test_pack_clients() -> None:
    assert pack_clients([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]


def _rounds_agree(seq: SequentialExecutor, par: RayExecutor, state: dict) -> None:  # type: ignore[type-arg]
    """Two rounds of MOON (the second uses what clients kept): the same bits."""
    try:
        strategy = build_update({"name": "moon"}, 0)
        s_seq, s_par = dict(state), dict(state)
        for r in (1, 2):
            u_seq = seq.train(Broadcast(s_seq), [0, 1, 2, 3], r)
            u_par = par.train(Broadcast(s_par), [3, 1, 0, 2], r)
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
def test_ray_matches_sequential_bit_for_bit(cache_dir: Path, ray_session: None) -> None:
    spec, state = _spec(cache_dir, "moon")
    fed = validate_config(spec.config).federation.model_copy(
        update={"clients_per_actor": 1, "num_cpus": 0.5}
    )
    _rounds_agree(SequentialExecutor(spec), RayExecutor(spec, fed), state)


@pytest.mark.ray
def test_ray_matches_sequential_bit_for_bit_in_stacks(cache_dir: Path, ray_session: None) -> None:
    """`client_batch`: stacks of 16 in one sequential host, of 2 in Ray actors of 2
    clients: the same bits."""
    spec, state = _spec(cache_dir, "moon")

    def with_batch(g: int) -> HostSpec:
        config = {**spec.config, "federation": {**spec.config["federation"], "client_batch": g}}
        return dataclasses.replace(spec, config=config)

    fed = validate_config(with_batch(2).config).federation.model_copy(
        update={"clients_per_actor": 2, "num_cpus": 0.5}
    )
    _rounds_agree(SequentialExecutor(with_batch(16)), RayExecutor(with_batch(2), fed), state)


@pytest.mark.ray
def test_refuses_more_actors_than_cpus(cache_dir: Path, ray_session: None) -> None:
    spec, _ = _spec(cache_dir)
    fed = validate_config(spec.config).federation.model_copy(
        update={"clients_per_actor": 1, "num_cpus": 1.0}
    )
    with pytest.raises(UserError, match="clients_per_actor"):
        RayExecutor(spec, fed)


class Died(Exception):
    """Stands in for ray.exceptions.RayActorError."""


def _update(cid: int) -> ClientUpdate:
    return ClientUpdate(cid, 1, {}, np.zeros(1), 0.0)


def _flaky(fail_times: dict[int, int]) -> tuple[Any, Any, list[tuple[int, list[int]]]]:
    """Hosts that die on their first `fail_times[host]` calls, recording every call."""
    calls: list[tuple[int, list[int]]] = []
    left = dict(fail_times)

    def submit(host: int, cids: list[int]) -> tuple[int, list[int]]:
        calls.append((host, cids))
        return host, cids

    def fetch(fut: tuple[int, list[int]]) -> list[ClientUpdate]:
        host, cids = fut
        if left.get(host, 0) > 0:
            left[host] -= 1
            raise Died
        return [_update(c) for c in cids]

    return submit, fetch, calls


def test_gather_round_retries_a_dead_hosts_clients_once_each() -> None:
    submit, fetch, calls = _flaky({1: 1})
    results, report = gather_round({0: [0, 1], 1: [2, 3]}, submit, fetch, (Died,), "retry", 2, 1, 5)
    assert sorted(u.client_id for b in results for u in b) == [0, 1, 2, 3]  # none lost or twice
    assert calls == [(0, [0, 1]), (1, [2, 3]), (1, [2, 3])]
    assert (report.failed_actors, report.retried_clients, report.lost_clients) == (1, 2, [])


def test_gather_round_drops_or_gives_up() -> None:
    submit, fetch, _ = _flaky({1: 1})
    results, report = gather_round({0: [0, 1], 1: [2, 3]}, submit, fetch, (Died,), "drop", 2, 2, 5)
    assert [u.client_id for b in results for u in b] == [0, 1]
    assert report.lost_clients == [2, 3] and report.retried_clients == 0
    submit, fetch, _ = _flaky({1: 9})  # never comes back: retries run out
    _, report = gather_round({0: [0], 1: [2, 3]}, submit, fetch, (Died,), "retry", 2, 1, 5)
    assert report.failed_actors == 3 and report.lost_clients == [2, 3]
    submit, fetch, _ = _flaky({1: 1})
    with pytest.raises(SimulationError, match="min_clients=3"):
        gather_round({0: [0, 1], 1: [2, 3]}, submit, fetch, (Died,), "drop", 0, 3, 5)
