"""Every tensor meets tensors of its own device: a whole round on a second device, no GPU.

Clients train on `tests.fake_device`, a device with CUDA's mixing rules that exists on a
CPU-only machine: a tensor made on the CPU and combined with the model's (a loss target, a
zero to start a sum) fails here as it would fail on a GPU's first round.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import fuss_ray.federation.client as client_module
from fuss_ray.config import validate_config
from fuss_ray.federation.strategies import STRATEGIES
from fuss_ray.metrics.evaluate import evaluate_state, evaluate_variants
from fuss_ray.simulation import run_simulation
from tests.fake_device import DeviceMismatch, DeviceTensor, on_fake_device

from ..conftest import tiny_config_dict


def test_the_fake_device_keeps_cudas_rules() -> None:
    """The harness can fail: each mix that CUDA refuses is refused here too."""
    with on_fake_device() as dev:
        a = torch.ones(3, 2).to(dev)
        assert isinstance(a, DeviceTensor) and a.device == dev
        with pytest.raises(DeviceMismatch):
            _ = a + torch.ones(3, 2)  # a CPU tensor meets a device tensor
        with pytest.raises(DeviceMismatch):
            torch.nn.functional.cross_entropy(a, torch.zeros(3, dtype=torch.long))
        assert float((a * torch.tensor(2.0)).sum()) == 12.0  # CPU scalars are fine
        assert a[torch.tensor([0, 2])].shape == (2, 2)  # so are CPU indices
        a.copy_(torch.full((3, 2), 5.0))  # and copies across devices
        assert a.cpu().tolist() == [[5.0, 5.0]] * 3
        with pytest.raises((RuntimeError, TypeError)):
            a.numpy()  # a GPU tensor must come back with .cpu() first
        z = torch.zeros(2, device=dev)
        assert isinstance(z, DeviceTensor)
        layer = torch.nn.Linear(2, 1).to(dev)
        layer(a).sum().backward()
        assert isinstance(layer.weight.grad, DeviceTensor)


@contextmanager
def clients_on_fake_device() -> Iterator[torch.device]:
    """Client hosts train on the fake device (as `training_device` would pick a GPU)."""
    with on_fake_device() as dev, pytest.MonkeyPatch.context() as mp:
        mp.setattr(client_module, "training_device", lambda *args: dev)
        yield dev


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


def test_the_fake_device_refuses_what_cuda_refuses_under_deterministic_algorithms() -> None:
    """grid_sample's backward (what client steps used to sample codes with) fails there."""
    with on_fake_device() as dev, deterministic_algorithms():
        codes = torch.randn(2, 3, 5, 5).to(dev).requires_grad_(True)
        grid = (torch.rand(2, 1, 4, 2) * 2 - 1).to(dev)
        out = torch.nn.functional.grid_sample(codes, grid, align_corners=True)
        with pytest.raises(RuntimeError, match="deterministic"):
            out.sum().backward()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_two_rounds_of_every_strategy_on_another_device(
    name: str, cache_dir: Path, tmp_path: Path
) -> None:
    """Local training with every loss term, the reduction and the server step, under
    `torch.use_deterministic_algorithms(True)` with CUDA's list of refusals.

    Two rounds, so that MOON's term (which needs the client's previous model) runs too.
    """
    tree = tiny_config_dict(cache_dir, **{"federation.strategy": name, "tracking": False})
    cfg = validate_config(tree)
    with clients_on_fake_device(), deterministic_algorithms():
        summary = run_simulation(cfg, tmp_path / "out", show_progress=False)
    reference = run_simulation(cfg, tmp_path / "cpu", show_progress=False)
    assert [r["miou"] for r in summary["rounds"]] == pytest.approx(
        [r["miou"] for r in reference["rounds"]], abs=1e-6
    )


def test_an_online_round_on_another_device(cache_dir: Path, tmp_path: Path) -> None:
    """The actor's own backbone extracts on the device, and the round trains there."""
    tree = tiny_config_dict(
        cache_dir,
        **{
            "features.mode": "online",
            "federation.strategy": "moon",
            "tracking": False,
            "train.rounds": 2,
        },
    )
    with clients_on_fake_device():
        summary = run_simulation(validate_config(tree), tmp_path / "out", show_progress=False)
    assert len(summary["rounds"]) == 2


def test_evaluation_with_model_and_features_on_another_device(
    cache_dir: Path, tmp_path: Path
) -> None:
    """Plain, flip and CRF scoring with the model on the device give the CPU's numbers."""
    from fuss_ray.features.cache import ensure_features
    from fuss_ray.simulation import initial_state, prepare

    tree = tiny_config_dict(cache_dir, **{"evaluation.flip_tta": True, "evaluation.crf": True})
    cfg = validate_config(tree)
    prepared = prepare(cfg, show_progress=False)
    store = ensure_features(cfg.features, prepared.evaluation, "eval", False, True, True)
    state = initial_state(cfg, prepared.train_store.feature_dim)
    model = client_module.build_model(cfg, prepared.train_store.feature_dim)
    on_cpu = evaluate_variants(model, state, store, 3, flip=True, crf_iterations=2)
    with on_fake_device() as dev:
        model = model.to(dev)
        here = evaluate_variants(model, state, store, 3, flip=True, crf_iterations=2)
        plain = evaluate_state(model, state, store, 3)
    assert set(here) == {"plain", "flip", "crf", "flip+crf"}
    for key in here:
        assert here[key]["miou"] == pytest.approx(on_cpu[key]["miou"], abs=1e-6)
    assert np.isfinite(plain["miou"])
