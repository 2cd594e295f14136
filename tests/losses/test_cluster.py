import math

import pytest
import torch

from fuss_ray.losses import cluster_loss


def test_hand_value_and_assignment() -> None:
    # pixel0 = (1, 0), pixel1 = (0, 2); centroids (1, 0), (1, 1).
    codes = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    cents = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    loss, assign = cluster_loss(codes, cents)
    assert loss.item() == pytest.approx(-(1 + 1 / math.sqrt(2)) / 2)
    assert assign.tolist() == [[[0, 1]]]
    loss.backward()
    assert codes.grad is None  # codes are detached: only centroids learn from it
    assert cents.grad is not None
