"""`federation.client_batch`: clients of a host trained as one stacked computation.

What it promises: a client's update (state, loss, occupancy, what it sends and keeps) is
the same bits in a stack of any size, so neither G nor the packing of clients into hosts
changes a run; against the per-client path (client_batch 1) it differs by float rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pytest
import torch

from fuss_ray.config import validate_config
from fuss_ray.federation.client import ClientHost, HostSpec
from fuss_ray.federation.objective import ClientObjective, LocalRun, per_client_sum
from fuss_ray.federation.strategies import STRATEGIES, strategy_for
from fuss_ray.federation.strategies.base import StrategyParams, register_strategy
from fuss_ray.federation.strategies.fedavg import IndexAveraging
from fuss_ray.federation.types import ClientUpdate
from fuss_ray.models.head import model_state
from fuss_ray.simulation.checks import check_client_batch
from tests import fake_device

from .test_device_consistency import clients_on_fake_device, deterministic_algorithms

OBJECTIVES = ["fedavg", "fedprox", "moon", "scaffold", "local"]  # each kind of objective
CLIENTS = 7  # six of 8 images (batch 4) and one of 3 (a stack of its own batch size)
TOLERANCE = 1e-4  # stacked vs per-client, relative to each tensor's largest value


def _host(strategy: str, batch: int, side: int, steps: int = 2, **fed: Any) -> ClientHost:
    n = 8 * CLIENTS
    tree = {
        "data": {"dataset": "synthetic", "num_images": n, "num_classes": 3, "image_size": 64},
        "partition": {"kind": "iid", "num_clients": CLIENTS},
        "model": {"code_dim": 8},
        "train": {"local_steps": steps, "batch_size": 4},
        "federation": {
            "strategy": strategy,
            "executor": "sequential",
            "client_batch": batch,
            **fed,
        },
        "tracking": False,
    }
    cfg = validate_config(tree)
    sizes = [8] * (CLIENTS - 1) + [3]
    clients = {c: list(range(8 * c, 8 * c + sizes[c])) for c in range(CLIENTS)}
    generated = {"seed": 0, "num_images": n, "shape": [12, side, side], "block": 16}
    torch.manual_seed(0)  # the host's initial model
    return ClientHost(HostSpec(cfg.to_dict(), "", clients, generated=generated))


def _two_rounds(host: ClientHost) -> list[ClientUpdate]:
    """A second round, where MOON, SCAFFOLD and local-only use what clients kept."""
    broadcast = host.strategy.broadcast(model_state(host.model))
    host.train(broadcast, list(range(CLIENTS)), 1)
    return host.train(broadcast, list(range(CLIENTS)), 2)


def _assert_same_bits(a: list[ClientUpdate], b: list[ClientUpdate]) -> None:
    assert [u.client_id for u in a] == [u.client_id for u in b]
    for x, y in zip(a, b, strict=True):
        assert x.loss == y.loss, x.client_id
        assert np.array_equal(x.occupancy, y.occupancy), x.client_id
        for k in x.state:
            assert np.array_equal(x.state[k], y.state[k]), (x.client_id, k)
        assert sorted(x.extras) == sorted(y.extras)
        for k in x.extras:
            assert np.array_equal(x.extras[k], y.extras[k]), (x.client_id, k)


# 10 x 10 maps: the kNN partner's head runs on the whole map; 24 x 24: on its sampled cells.
@pytest.mark.parametrize("side", [10, 24])
@pytest.mark.parametrize("strategy", OBJECTIVES)
def test_stacks_of_any_size_give_the_same_bits(strategy: str, side: int) -> None:
    """Stacks of 1, 3 and 16 clients: every update and what clients keep, bit for bit."""
    ones = _host(strategy, 16, side)
    ones._groups = lambda ids: [[c] for c in sorted(ids)]  # type: ignore[method-assign]
    reference = _two_rounds(ones)
    for g in (3, 16):
        host = _host(strategy, g, side)
        assert len(host._groups(list(range(CLIENTS)))) == {3: 3, 16: 2}[g]
        _assert_same_bits(_two_rounds(host), reference)
        for c, kept in ones.kept.items():
            assert all(np.array_equal(v, host.kept[c][k]) for k, v in kept.items())


@pytest.mark.parametrize("strategy", OBJECTIVES)
def test_a_stack_agrees_with_the_per_client_path_up_to_rounding(strategy: str) -> None:
    """The same math as the per-client path (client_batch 1), within TOLERANCE."""
    reference = _host(strategy, 1, 24, steps=4)
    per_client = _two_rounds(reference)
    stacked = _two_rounds(_host(strategy, 4, 24, steps=4))
    for x, y in zip(stacked, per_client, strict=True):
        assert x.loss == pytest.approx(y.loss, rel=TOLERANCE, abs=TOLERANCE)
        np.testing.assert_allclose(x.occupancy, y.occupancy, atol=0.02)
        for part in ("state", "extras"):
            for k, v in getattr(y, part).items():
                # SCAFFOLD's `dc:` is the change of a control variate, a difference of two
                # means of gradients: its rounding is the control's, so it is measured
                # against the control it changes (as large as 2.6e-4 of its own largest
                # value on one CPU, while the parameters agree within 2e-6).
                kept = reference.kept.get(y.client_id, {}).get(k.removeprefix("dc:"))
                scales = [v, kept] if part == "extras" and kept is not None else [v]
                top = max(max(float(np.max(np.abs(a))) for a in scales), 1e-6)
                err = float(np.max(np.abs(getattr(x, part)[k] - v))) / top
                assert err <= TOLERANCE, (strategy, x.client_id, k, err)


def test_the_per_client_path_stays_the_default() -> None:
    host = _host("fedavg", 1, 10)
    assert host.client_batch == 1
    assert host._groups([4, 0, 2]) == [[0], [2], [4]]


def test_stacks_share_a_batch_size() -> None:
    """A stack's steps are one shape: the client of 3 images trains in a stack of its own."""
    host = _host("fedavg", 4, 10)
    assert host._groups(list(range(CLIENTS))) == [[0, 1, 2, 3], [4, 5], [6]]


def test_every_built_in_objective_stacks() -> None:
    for name in STRATEGIES:
        cfg = validate_config({"federation": {"strategy": name}})
        assert strategy_for(cfg).client_objective().stacks(), name


class _Unstacked(ClientObjective):
    """A plugin author's objective with a per-client term only."""

    def term(
        self, run: LocalRun, features: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor | None:
        return 0.0 * codes.sum()


class _UnstackedParams(StrategyParams):
    name: Literal["unstacked-test"] = "unstacked-test"


class _UnstackedStrategy(IndexAveraging[_UnstackedParams]):
    name = "unstacked-test"
    Params = _UnstackedParams

    def client_objective(self) -> _Unstacked:
        return _Unstacked()


@pytest.fixture
def unstacked() -> Iterator[None]:
    """The strategy registered for one test (other tests list every registered one)."""
    register_strategy(_UnstackedStrategy)
    try:
        yield
    finally:
        STRATEGIES._items.pop("unstacked-test")
        STRATEGIES._local.discard("unstacked-test")


def test_an_objective_without_stacked_hooks_trains_one_at_a_time(
    caplog: pytest.LogCaptureFixture, unstacked: None
) -> None:
    """Its hosts fall back to client_batch 1, and the run says so in one line."""
    assert not _Unstacked.stacks()
    host = _host("unstacked-test", 8, 10)
    assert host.client_batch == 1
    assert host._groups([1, 0]) == [[0], [1]]
    cfg = validate_config({"federation": {"strategy": "unstacked-test", "client_batch": 8}})
    with caplog.at_level(logging.WARNING, logger="fuss_ray"):
        check_client_batch(cfg, strategy_for(cfg))
    (line,) = [r.getMessage() for r in caplog.records]
    assert "client_batch: 8" in line and "'unstacked-test'" in line and "one at a time" in line
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fuss_ray"):
        check_client_batch(validate_config({"federation": {"client_batch": 8}}), strategy_for(cfg))
        assert caplog.records  # the same strategy: still said
        caplog.clear()
        plain = validate_config({"federation": {"client_batch": 8}})
        check_client_batch(plain, strategy_for(plain))
    assert not caplog.records


def test_per_client_sums_do_not_depend_on_the_stack() -> None:
    """`torch.stack(terms).sum(0)` changes client 0's bits between 3 and 6 columns here."""
    gen = torch.Generator().manual_seed(0)
    terms = [torch.randn(16, generator=gen) * 10 ** (i % 4) for i in range(7)]
    full = per_client_sum(terms)
    for g in (1, 2, 3, 6, 9):
        assert torch.equal(per_client_sum([t[:g].clone() for t in terms]), full[:g])


@pytest.mark.parametrize("strategy", ["fedprox", "moon", "scaffold"])
def test_a_stack_on_a_device_copies_nothing_per_step(strategy: str) -> None:
    """On the fake device, under deterministic algorithms, the copies of a round of
    stacked clients do not grow with their steps."""
    seen = []
    for steps in (2, 5):
        with clients_on_fake_device(), deterministic_algorithms():
            host = _host(strategy, 4, 10, steps=steps)
            broadcast = host.strategy.broadcast(model_state(host.model))
            host.train(broadcast, [0, 1], 1)
            fake_device.TRANSFERS.clear()
            updates = host.train(broadcast, [0, 1, 2, 6], 2)
            seen.append(dict(fake_device.TRANSFERS))
        assert all(np.isfinite(u.loss) for u in updates)
    assert seen[0] == seen[1]
    assert seen[0]["to_host"] > 0
