import math

import pytest
import torch

from fuss_ray.federation.strategies.moon import moon_loss


def test_hand_value() -> None:
    z = torch.tensor([[1.0, 0.0]])
    # pos = cos(z, zg) / 0.5 = 2, neg = cos(z, zp) / 0.5 = 0 -> log(1 + e^-2)
    loss = moon_loss(z, torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)))


def test_pulls_toward_global() -> None:
    z = torch.tensor([[1.0, 1.0]], requires_grad=True)
    moon_loss(z, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5).backward()
    assert z.grad is not None
    assert z.grad[0, 0] < 0 < z.grad[0, 1]  # descent raises x (global), lowers y (previous)
