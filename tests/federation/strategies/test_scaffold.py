"""SCAFFOLD: hand-checked control variates, both executors bit for bit, resume after a kill."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fuss_ray.config import validate_config
from fuss_ray.federation.checkpoint import latest_checkpoint
from fuss_ray.federation.objective import LocalRun
from fuss_ray.federation.server_update import build_update
from fuss_ray.federation.strategies import STRATEGIES
from fuss_ray.federation.strategies.scaffold import CHANGE, CONTROL, ControlVariates
from fuss_ray.federation.types import Broadcast, ClientUpdate
from fuss_ray.models.head import FussModel, model_state
from fuss_ray.simulation import run_simulation

from ...conftest import tiny_config_dict


def _model() -> FussModel:
    torch.manual_seed(0)
    return FussModel(3, 2, 2, dropout=0.0)


def test_the_correction_term_shifts_every_gradient_by_c_minus_ci() -> None:
    model = _model()
    state = model_state(model)
    c = {k: np.full(v.shape, 0.5, np.float32) for k, v in state.items()}
    ci = {k: np.full(v.shape, 0.2, np.float32) for k, v in state.items()}
    broadcast = Broadcast(state, {f"{CONTROL}{k}": v for k, v in c.items()})
    run = LocalRun(0, model, broadcast, ci, torch.device("cpu"), 2, _model)
    objective = ControlVariates()
    objective.begin(run)
    for step in range(2):
        model.zero_grad()
        x = torch.full((1, 3, 2, 2), float(step + 1))
        plain = model.head(x).sum() + model.centroids.sum()  # a loss with known gradients
        extra = objective.term(run, x, model.head(x))
        assert extra is not None
        (plain + extra).backward()  # type: ignore[no-untyped-call]
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}  # type: ignore[union-attr]
        objective.after_backward(run)
        model.zero_grad()
        model.head(x).sum().backward()  # type: ignore[no-untyped-call]
        for k, p in model.named_parameters():
            raw = p.grad if p.grad is not None else torch.zeros_like(p)
            if k == "centroids":
                raw = torch.ones_like(p)
            assert torch.allclose(grads[k] - raw, torch.full_like(p, 0.3)), k  # c - c_i
    kept, extras = objective.end(run, model_state(model))
    assert kept is not None
    # c_i(new) is the mean raw gradient: the centroids' is 1 at both steps; a bias of the
    # linear branch sees (1 per position) x 4 positions at each step.
    assert np.allclose(kept["centroids"], 1.0)
    assert np.allclose(kept["head.linear.bias"], 4.0)
    assert np.allclose(extras[f"{CHANGE}centroids"], 1.0 - 0.2)


def _update(cid: int, n: int, dc: float, head: float) -> ClientUpdate:
    state = {"head.w": np.full(2, head, np.float32), "centroids": np.zeros((2, 2), np.float32)}
    extras = {f"{CHANGE}{k}": np.full(v.shape, dc, np.float32) for k, v in state.items()}
    return ClientUpdate(cid, n, state, np.full(2, 0.5), 0.0, extras)


def test_the_server_moves_c_by_the_sampled_share_of_the_mean_change() -> None:
    update = build_update({"name": "scaffold"}, 0)
    strategy = update.strategy
    strategy.attach(num_clients=4, total_samples=40)
    g = {"head.w": np.zeros(2, np.float32), "centroids": np.zeros((2, 2), np.float32)}
    out = update.aggregate(g, [_update(0, 10, 1.0, 2.0), _update(1, 30, 3.0, 6.0)], 1)
    assert out["head.w"].tolist() == [5.0, 5.0]  # FedAvg of the heads: (10 * 2 + 30 * 6) / 40
    # Two of four clients sampled; their weighted mean change is (10 * 1 + 30 * 3) / 40 = 2.5.
    assert np.allclose(strategy.memory[f"{CONTROL}head.w"], 0.5 * 2.5)
    extras = strategy.broadcast(out).extras
    assert np.allclose(extras[f"{CONTROL}centroids"], 1.25)
    # The control variate is the strategy's memory: it travels with the server update's
    # checkpoint part, and a restored update broadcasts the same c.
    restored = build_update({"name": "scaffold"}, 0)
    restored.load_state_dict(update.state_dict())
    assert np.array_equal(
        restored.strategy.broadcast(out).extras[f"{CONTROL}head.w"], extras[f"{CONTROL}head.w"]
    )


def _cfg(cache_dir: Path, **extra: Any) -> Any:
    tree = tiny_config_dict(
        cache_dir,
        **{
            "federation.strategy": "scaffold",
            "federation.fraction": 0.5,
            "train.rounds": 3,
            "tracking": False,
            **extra,
        },
    )
    return validate_config(tree)


def _same(a: dict[str, Any], b: dict[str, Any], out_a: Path, out_b: Path) -> None:
    assert [r["miou"] for r in a["rounds"]] == [r["miou"] for r in b["rounds"]]
    assert a["final"] == b["final"]
    with np.load(out_a / "final_state.npz") as x, np.load(out_b / "final_state.npz") as y:
        assert all(np.array_equal(x[k], y[k]) for k in x.files)


class Stop(Exception):
    pass


def test_registered_and_resumes_after_a_kill_exactly(cache_dir: Path, tmp_path: Path) -> None:
    assert "scaffold" in STRATEGIES
    cfg = _cfg(cache_dir)
    whole = run_simulation(cfg, tmp_path / "whole", show_progress=False)

    def stop(summary: dict[str, Any]) -> None:
        if summary["round"] == 2:
            raise Stop

    with pytest.raises(Stop):
        run_simulation(cfg, tmp_path / "cut", show_progress=False, on_round=stop)
    ckpt = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    assert ckpt is not None and ckpt.meta["client_files"]  # the clients' c_i are saved
    assert any(k.startswith(CONTROL) for k in ckpt.server_tree()["strategy"])  # and c
    resumed = run_simulation(cfg, tmp_path / "cut", show_progress=False, resume=True)
    _same(whole, resumed, tmp_path / "whole", tmp_path / "cut")


@pytest.mark.ray
def test_ray_and_sequential_agree_bit_for_bit(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    seq = run_simulation(_cfg(cache_dir), tmp_path / "seq", show_progress=False)
    on_ray = _cfg(
        cache_dir,
        **{
            "federation.executor": "ray",
            "federation.clients_per_actor": 1,
            "federation.num_cpus": 0.5,
        },
    )
    par = run_simulation(on_ray, tmp_path / "ray", show_progress=False)
    _same(seq, par, tmp_path / "seq", tmp_path / "ray")
