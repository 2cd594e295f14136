import pytest
import torch

from fuss_ray.federation.strategies.fedprox import proximal_term


def test_hand_value() -> None:
    p = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    a = [torch.zeros(2), torch.tensor([[1.0]])]
    # (0.5 / 2) * (1 + 4 + 4)
    assert proximal_term(p, a, 0.5).item() == pytest.approx(2.25)
