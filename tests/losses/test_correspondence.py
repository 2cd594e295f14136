import math

import pytest
import torch

from fuss_ray.losses import CorrespondenceLoss, correspondence_term, derangement, sample_at


def _pts(*vectors: tuple[float, float]) -> torch.Tensor:
    """(1, D, P) from P vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T.unsqueeze(0)


def test_identity_correlation_hand_value() -> None:
    # F = I (row means 0.5, global mean 0.5 -> unchanged), S = I, b = 0 -> -2/4.
    f = _pts((1, 0), (0, 1))
    s = _pts((1, 0), (0, 1)).requires_grad_(True)
    loss = correspondence_term(f, f, s, s, 0.0)
    assert loss.item() == pytest.approx(-0.5)


def test_centering_and_shift_hand_value() -> None:
    # F = [[1, 1], [0, 0]] -> centred per query to 0, plus global mean 0.5; S = I; b = 0.2.
    fa, fb = _pts((1, 0), (0, 1)), _pts((1, 0), (1, 0))
    s = _pts((1, 0), (0, 1))
    assert correspondence_term(fa, fb, s, s, 0.2).item() == pytest.approx(-(0.3 + 0.3) / 4)


def test_negative_code_similarity_is_clamped() -> None:
    fa, fb = _pts((1, 0), (0, 1)), _pts((1, 0), (1, 0))
    sa, sb = _pts((1, 0), (0, 1)), _pts((1, 0), (-1, 0))
    # S = [[1, -1], [0, 0]] -> clamp -> only S_00 = 1 contributes 0.3.
    assert correspondence_term(fa, fb, sa, sb, 0.2).item() == pytest.approx(-0.3 / 4)


def test_features_get_no_gradient() -> None:
    f = _pts((1, 0), (0.5, 1)).requires_grad_(True)
    s = _pts((1, 2), (0, 1)).requires_grad_(True)
    correspondence_term(f, f, s, s, 0.1).backward()
    assert f.grad is None
    assert s.grad is not None


def test_sample_at_corners_and_border() -> None:
    maps = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    coords = torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [5.0, -1.0]]])
    out = sample_at(maps, coords)
    assert out.shape == (1, 1, 4)
    assert out[0, 0].tolist() == pytest.approx([0.0, 3.0, 1.5, 1.0])


def test_derangement_has_no_fixed_point() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in range(2, 9):
        perm = derangement(n, gen)
        assert sorted(perm.tolist()) == list(range(n))
        assert all(perm[i] != i for i in range(n))


def test_weighted_sum_of_terms() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 4, 5, 5)
    codes = torch.randn(3, 2, 5, 5)
    loss_fn = CorrespondenceLoss(weights=(1.0, 0.0, 0.0), shifts=(0.0, 0.0, 0.0), samples=3)
    total = loss_fn(feats, codes, feats, codes, gen)
    one, _, _ = loss_fn.terms(feats, codes, feats, codes, torch.Generator().manual_seed(0))
    assert total.item() == pytest.approx(one.item())
    loss_fn = CorrespondenceLoss(weights=(0.5, 2.0, 3.0), shifts=(0.1, 0.2, 0.3), samples=3)
    total = loss_fn(feats, codes, feats, codes, torch.Generator().manual_seed(1))
    s, k, r = loss_fn.terms(feats, codes, feats, codes, torch.Generator().manual_seed(1))
    expect = 0.5 * s.item() + 2.0 * k.item() + 3.0 * r.item()
    assert math.isclose(total.item(), expect, rel_tol=1e-5)
