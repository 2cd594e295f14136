"""The head on pixel rows (the training path) against the head's convolutions."""

from __future__ import annotations

import pytest
import torch

from fuss_ray.losses.sampling import DistinctCells, Pointwise, gather_taps, taps
from fuss_ray.models.head import SegmentationHead
from fuss_ray.models.rows import head_codes, head_rows


def _grads(head: SegmentationHead) -> list[torch.Tensor]:
    return [p.grad.clone() for p in head.parameters() if p.grad is not None]


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_rows_head_equals_the_convolutions_with_the_same_draws(dropout: float) -> None:
    """Codes, every weight gradient and the random stream after it, train mode."""
    torch.manual_seed(0)
    head = SegmentationHead(6, 4, dropout=dropout).train()
    maps = torch.randn(3, 6, 5, 7)
    weight = torch.randn(3, 4, 5, 7)
    out = []
    for fn in (head, lambda x: head_codes(head, x)):
        head.zero_grad()
        torch.manual_seed(3)
        codes = fn(maps)
        (codes * weight).sum().backward()
        out.append((codes.detach(), _grads(head), torch.rand(1)))
    (ref, ref_grads, ref_next), (new, new_grads, new_next) = out
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-6)
    assert len(new_grads) == len(ref_grads) == 6
    for g, g_ref in zip(new_grads, ref_grads, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(new_next, ref_next)  # the mask took the draws Dropout2d takes


def test_rows_head_codes_have_channels_last_strides_and_no_feature_gradient() -> None:
    head = SegmentationHead(6, 4).train()
    maps = torch.randn(2, 6, 3, 3, requires_grad=True)
    codes = head_codes(head, maps)
    assert codes.shape == (2, 4, 3, 3) and codes.permute(0, 2, 3, 1).is_contiguous()
    codes.sum().backward()
    assert maps.grad is None  # the features are frozen: the backward pass skips them


def test_rows_of_chosen_pixels_are_those_pixels_codes() -> None:
    """`head_rows` on some pixels of a batch gives the whole batch's codes there, under
    the mask the whole batch would draw."""
    head = SegmentationHead(6, 4, dropout=0.5).train()
    maps = torch.randn(3, 6, 4, 4)
    image, cell = torch.tensor([0, 0, 2, 1]), torch.tensor([5, 0, 15, 7])
    torch.manual_seed(1)
    whole = head(maps).flatten(2)[image, :, cell]
    torch.manual_seed(1)
    rows = head_rows(head, maps.flatten(2)[image, :, cell], image, 3)
    torch.testing.assert_close(rows, whole, rtol=1e-5, atol=1e-6)


def test_a_pointwise_head_on_distinct_cells_equals_it_on_every_tap() -> None:
    """Each distinct cell evaluated once (taps of nearby points share cells): the same
    samples and the same gradients as evaluating every tap."""
    torch.manual_seed(0)
    head = SegmentationHead(6, 4, dropout=0.5).train()
    maps = torch.randn(3, 6, 5, 5)
    coords = torch.rand(3, 40, 2) * 2 - 1
    coords[:, 1] = coords[:, 0]  # one point twice: every tap repeated
    tap = taps(coords, 5, 5)
    weight = torch.randn(3, 4, 40)
    every_tap = Pointwise(lambda x: head_codes(head, x), maps)
    distinct = DistinctCells(lambda r, i, b: head_rows(head, r, i, b), maps)
    out = []
    for sampler in (every_tap, distinct):
        head.zero_grad()
        torch.manual_seed(4)
        samples = sampler.sample(tap)
        (samples * weight).sum().backward()
        out.append((samples.detach(), _grads(head)))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-5, atol=1e-6)
    for g, g_ref in zip(out[1][1], out[0][1], strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


def test_samples_of_channels_last_codes_equal_those_of_contiguous_ones() -> None:
    """The sampler reads channels-last maps by whole rows: same values, same gradient."""
    maps = torch.randn(2, 5, 6, 4)
    tap = taps(torch.rand(2, 9, 2) * 2 - 1, 6, 4)
    first = maps.clone().requires_grad_(True)
    last = maps.permute(0, 2, 3, 1).contiguous().requires_grad_(True)
    a = gather_taps(first, tap)
    b = gather_taps(last.permute(0, 3, 1, 2), tap)
    torch.testing.assert_close(b, a)
    (a * torch.arange(9.0)).sum().backward()
    (b * torch.arange(9.0)).sum().backward()
    assert last.grad is not None and first.grad is not None
    torch.testing.assert_close(last.grad.permute(0, 3, 1, 2), first.grad)
