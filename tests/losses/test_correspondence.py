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


@pytest.mark.parametrize(
    ("batch", "weights"),
    [
        (4, (0.67, 0.25, 0.63)),
        (4, (0.0, 1.0, 0.5)),  # no self term
        (4, (1.0, 0.0, 0.5)),  # no kNN term
        (3, (0.5, 0.5, 0.0)),  # no random term
        (2, (1.0, 0.3, 0.8)),  # one derangement pair: every random block is the same
        (1, (1.0, 0.3, 0.8)),  # a single image: no random term
    ],
)
def test_the_fused_loss_equals_the_term_by_term_one(
    batch: int, weights: tuple[float, float, float]
) -> None:
    """Value, each term and both gradients against the first implementation."""
    from tests.reference_step import ReferenceLoss

    shifts = (0.1, 0.05, 0.4)
    torch.manual_seed(0)
    feats, knn_feats = torch.randn(batch, 6, 7, 7), torch.randn(batch, 6, 7, 7)
    codes = torch.randn(batch, 5, 7, 7, requires_grad=True)
    knn_codes = torch.randn(batch, 5, 7, 7, requires_grad=True)
    grads, values = [], []
    for fn in (ReferenceLoss(weights, shifts, samples=4), CorrespondenceLoss(weights, shifts, 4)):
        codes.grad = knn_codes.grad = None
        loss = fn(feats, codes, knn_feats, knn_codes, torch.Generator().manual_seed(2))
        loss.backward()
        terms = fn.terms(feats, codes, knn_feats, knn_codes, torch.Generator().manual_seed(2))
        values.append([loss.item(), *[t.item() for t in terms]])
        grads.append([g.clone() if g is not None else None for g in (codes.grad, knn_codes.grad)])
    assert values[1] == pytest.approx(values[0], rel=1e-5, abs=1e-7)
    for ref, new in zip(grads[0], grads[1], strict=True):
        if ref is None:
            assert new is None or not new.any()
        else:
            assert new is not None
            torch.testing.assert_close(new, ref, rtol=1e-4, atol=1e-9)


def test_the_deterministic_sampler_equals_grid_sample() -> None:
    """Values and the gradient to the maps, corners, interior and beyond the border."""
    from fuss_ray.losses import bilinear_sample

    maps = torch.randn(2, 3, 4, 6, requires_grad=True)
    coords = torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [0.3, -0.7], [1.7, 0.2]]] * 2)
    coords[1] = torch.rand(4, 2) * 2 - 1
    out = bilinear_sample(maps, coords)
    ref = sample_at(maps, coords)
    torch.testing.assert_close(out, ref)
    (g,) = torch.autograd.grad((out * torch.arange(4.0)).sum(), maps)
    (g_ref,) = torch.autograd.grad((ref * torch.arange(4.0)).sum(), maps)
    torch.testing.assert_close(g, g_ref)


def test_a_pointwise_head_sampled_at_its_cells_equals_the_sampled_maps() -> None:
    """The head on the tapped cells alone gives the samples of the whole map's codes,
    with the same dropout masks (the same random draws)."""
    from fuss_ray.losses.sampling import Pointwise, gather_taps, taps
    from fuss_ray.models.head import SegmentationHead

    head = SegmentationHead(6, 4, dropout=0.5).train()
    maps = torch.randn(3, 6, 9, 9)
    tap = taps(torch.rand(3, 5, 2) * 2 - 1, 9, 9)
    torch.manual_seed(7)
    whole = gather_taps(head(maps), tap)
    torch.manual_seed(7)
    cells = Pointwise(head, maps).sample(tap)
    torch.testing.assert_close(cells, whole)
