"""The local-step loop: drawn up front, equal to the first loop, no waits on the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fuss_ray.config import validate_config
from fuss_ray.federation.client import ClientHost, HostSpec
from fuss_ray.federation.objective import ClientObjective, LocalRun
from fuss_ray.federation.steps import (
    GroupAdam,
    ShardFeatures,
    StepSettings,
    plan_steps,
    run_steps,
)
from fuss_ray.federation.types import Broadcast
from fuss_ray.losses import CorrespondenceLoss
from fuss_ray.models.head import FussModel, load_model_state, model_state
from tests import fake_device
from tests.reference_step import ReferenceLoss, reference_steps

from .test_device_consistency import clients_on_fake_device

WEIGHTS, SHIFTS = (0.67, 0.25, 0.63), (0.08, 0.02, 0.66)


def test_the_plan_draws_what_the_step_by_step_loop_drew() -> None:
    """Batches, partners, points and derangements: the same numbers, in the same order."""
    knn = np.random.default_rng(1).integers(10, size=(10, 2))
    loss_fn = CorrespondenceLoss(WEIGHTS, SHIFTS, samples=3)
    plan = plan_steps(10, knn, 4, 3, seed=5, loss_fn=loss_fn)
    rng, gen = np.random.default_rng(5), torch.Generator().manual_seed(5)
    for i in range(3):
        pick = rng.choice(10, size=4, replace=False)
        assert plan.picks[i].tolist() == pick.tolist()
        assert plan.partners[i].tolist() == knn[pick, rng.integers(2, size=4)].tolist()
        c1 = torch.rand(4, 9, 2, generator=gen) * 2 - 1
        c2 = torch.rand(4, 9, 2, generator=gen) * 2 - 1
        assert torch.equal(plan.draws.coords[i], torch.cat((c1, c2), dim=1))
        for r in range(5):
            order = torch.randperm(4, generator=gen)
            expect = torch.empty(4, dtype=torch.long)
            expect[order] = order.roll(-1)
            assert torch.equal(plan.draws.perms[i, r], expect)


def _workload(side: int) -> tuple[FussModel, np.ndarray, np.ndarray]:
    maps = np.random.default_rng(0).standard_normal((12, 16, side, side), dtype=np.float32)
    knn = np.random.default_rng(1).integers(12, size=(12, 2)).astype(np.int64)
    torch.manual_seed(0)
    return FussModel(16, 8, 4), maps, knn


@pytest.mark.parametrize("side", [5, 12])  # partners on every cell / on a few (Pointwise)
def test_the_steps_train_as_the_first_loop_did(side: int) -> None:
    """Same counts, loss and trained state as tests/reference_step.py, up to rounding."""
    model, maps, knn = _workload(side)
    start, idx = model_state(model), np.arange(12, dtype=np.int64)
    steps, cpu = 6, torch.device("cpu")
    counts_ref, loss_ref = reference_steps(
        model,
        lambda i: maps[i],
        idx,
        knn,
        ReferenceLoss(WEIGHTS, SHIFTS, samples=5),
        steps=steps,
        batch=4,
        seed=3,
        lrs=(5e-4, 5e-3),
        cluster_weight=1.0,
        num_centroids=4,
        device=cpu,
    )
    ref = model_state(model)
    load_model_state(model, start)
    torch.manual_seed(3)
    loss_fn = CorrespondenceLoss(WEIGHTS, SHIFTS, samples=5)
    run = LocalRun(0, model, Broadcast({}, {}), None, cpu, steps, lambda: model)
    counts, losses = run_steps(
        model,
        ShardFeatures(lambda i: maps[i], idx, cpu, 0),
        plan_steps(12, knn, 4, steps, 3, loss_fn),
        loss_fn,
        StepSettings(5e-4, 5e-3, 1.0, 4),
        ClientObjective(),
        run,
    )
    assert counts.tolist() == counts_ref.tolist()
    assert float(np.mean(losses)) == pytest.approx(loss_ref, rel=1e-5)
    for k, v in model_state(model).items():
        np.testing.assert_allclose(v, ref[k], rtol=0, atol=1e-5, err_msg=k)


def _host(strategy: str, steps: int) -> ClientHost:
    tree = {
        "data": {"dataset": "synthetic", "num_images": 16, "num_classes": 3, "image_size": 64},
        "partition": {"kind": "iid", "num_clients": 2},
        "model": {"code_dim": 8},
        "train": {"local_steps": steps, "batch_size": 4},
        "federation": {"strategy": strategy, "executor": "sequential"},
        "tracking": False,
    }
    cfg = validate_config(tree)
    generated = {"seed": 0, "num_images": 16, "shape": [12, 10, 10], "block": 16}
    spec = HostSpec(
        cfg.to_dict(), "", {0: list(range(8)), 1: list(range(8, 16))}, generated=generated
    )
    return ClientHost(spec)


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "moon", "scaffold"])
def test_no_step_waits_on_a_transfer(strategy: str) -> None:
    """On a device, the copies a client makes do not grow with its steps: none per step.

    Each client copies its shard, plan and draws over once and reads its counts and
    losses back once; 2 and 5 steps must make the same number of copies either way.
    """
    seen = []
    for steps in (2, 5):
        with clients_on_fake_device():
            host = _host(strategy, steps)
            state = model_state(host.model)
            broadcast = host.strategy.broadcast(state)
            host.train(broadcast, [0], 1)  # a first round (MOON's previous model)
            fake_device.TRANSFERS.clear()
            host.train(broadcast, [0, 1], 2)
            seen.append(dict(fake_device.TRANSFERS))
    assert seen[0] == seen[1]
    assert seen[0]["to_host"] > 0  # the harness counts (the state goes back to the server)


def test_a_shard_too_big_for_the_device_budget_is_copied_per_batch() -> None:
    """Within the budget the shard moves once; past it each batch is copied (non-blocking)
    and the values are the same either way."""
    maps = np.random.default_rng(0).standard_normal((6, 3, 2, 2), dtype=np.float32)
    idx = np.arange(6, dtype=np.int64)
    with fake_device.on_fake_device() as dev:
        whole = ShardFeatures(lambda i: maps[i], idx, dev, maps[0].nbytes, budget=6 * 48)
        parts = ShardFeatures(lambda i: maps[i], idx, dev, maps[0].nbytes, budget=6 * 48 - 1)
        assert whole.resident is not None and parts.resident is None
        pick = np.array([4, 1])
        on_device = whole.positions(pick[None])
        assert on_device is not None and parts.positions(pick[None]) is None
        a, b = whole.batch(pick, on_device[0]), parts.batch(pick, None)
        assert isinstance(a, fake_device.DeviceTensor) and isinstance(b, fake_device.DeviceTensor)
        assert torch.equal(a.cpu(), torch.from_numpy(maps[pick]))
        assert torch.equal(b.cpu(), torch.from_numpy(maps[pick]))


def test_group_adam_takes_torch_adams_steps_bit_for_bit() -> None:
    """Two groups, a parameter that skips a step without a gradient, five steps: the same
    parameters and moments as `torch.optim.Adam(..., foreach=True)`, to the last bit."""
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(4, 3, generator=gen), torch.randn(3, generator=gen), torch.randn(2, 5)]
    grads = [[torch.randn(t.shape, generator=gen) for t in init] for _ in range(5)]
    ours = [t.clone().requires_grad_() for t in init]
    theirs = [t.clone().requires_grad_() for t in init]
    mine = GroupAdam([(ours[:2], 1e-3), (ours[2:], 5e-3)])
    ref = torch.optim.Adam(
        [{"params": theirs[:2], "lr": 1e-3}, {"params": theirs[2:], "lr": 5e-3}], foreach=True
    )
    for step, g in enumerate(grads):
        mine.zero_grad()
        ref.zero_grad(set_to_none=True)
        for p, q, gi in zip(ours, theirs, g, strict=True):
            if step == 2 and gi is g[1]:
                continue  # no gradient this step: Adam leaves it and its moments alone
            p.grad, q.grad = gi.clone(), gi.clone()
        mine.step()
        ref.step()
        for p, q in zip(ours, theirs, strict=True):
            assert torch.equal(p, q)
            exp_avg, exp_avg_sq, count = mine.state[p]
            assert torch.equal(exp_avg, ref.state[q]["exp_avg"])
            assert torch.equal(exp_avg_sq, ref.state[q]["exp_avg_sq"])
            assert torch.equal(count, ref.state[q]["step"])
