"""The segmentation head as three matrix products over pixel rows, for local training.

A client step runs the head on every pixel of its batch and of its kNN partners' sampled
cells, forward and backward: at the quickstart's shapes that is 40% of the step. Its
1 x 1 convolutions on one torch thread and a batch under 16 images go through torch's
per-image convolution (`_slow_conv2d`), and the ReLU's backward and the bias sums each
take a pass over the hidden layer. Here the pixels are the rows of one (N, C) matrix
(channels last), made in the same pass that applies the dropout mask, and the head is
`hidden = relu(X W2^T + b2)`, `codes = X W1^T + hidden W3^T + (b1 + b3)`: one product per
layer for the whole batch, the ReLU in place, and a backward pass written out that
computes only the weight gradients (the features are frozen, so no input gradient).

The codes come back as a (B, D, h, w) tensor with channels-last strides: every caller
that reads a map of codes reads them unchanged, and samplers that know the layout read
whole rows (`fuss_ray.losses.sampling`). The values equal `SegmentationHead.forward`'s
up to float rounding (tests/models/test_rows.py); the dropout mask is drawn from torch's
global generator exactly as `nn.Dropout2d` draws it, so a run's random stream is the
same on either path.
"""

from __future__ import annotations

import torch

from fuss_ray.models.head import SegmentationHead


def dropout_mask(
    head: SegmentationHead, batch: int, channels: int, like: torch.Tensor
) -> torch.Tensor | None:
    """The (B, C) mask `nn.Dropout2d` would draw now, scaled by 1 / (1 - p); None when the
    head is in eval mode or p = 0 (then Dropout2d draws nothing)."""
    p = float(head.drop.p)
    if not head.training or p <= 0:
        return None
    noise = torch.empty(batch, channels, 1, 1, dtype=like.dtype, device=like.device)
    return noise.bernoulli_(1 - p).div_(1 - p).view(batch, channels)


@torch.no_grad()
def pixel_rows(features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, C, h, w) features as (B * h * w, C) rows, times each image's channel mask, in
    one pass. Frozen features: no gradient flows back to them."""
    b, c, h, w = features.shape
    out = torch.empty(b, h, w, c, dtype=features.dtype, device=features.device)
    src = features.permute(0, 2, 3, 1)
    if mask is None:
        out.copy_(src)
    else:
        torch.mul(src, mask.view(b, 1, 1, c), out=out)
    return out.view(b * h * w, c)


def head_codes(head: SegmentationHead, features: torch.Tensor) -> torch.Tensor:
    """`head(features)` for training: (B, D, h, w) codes with channels-last strides."""
    b, c, h, w = features.shape
    codes = _apply(head, pixel_rows(features, dropout_mask(head, b, c, features)))
    return codes.view(b, h, w, -1).permute(0, 3, 1, 2)


def head_rows(
    head: SegmentationHead, rows: torch.Tensor, image: torch.Tensor, batch: int
) -> torch.Tensor:
    """Codes (U, D) of U pixel rows (U, C) taken from a batch of `batch` images, row u
    from image `image[u]`: the head on those pixels alone, with the dropout mask that
    `head` would draw for the whole batch."""
    mask = dropout_mask(head, batch, rows.shape[1], rows)
    return _apply(head, rows if mask is None else rows * mask.index_select(0, image))


def _apply(head: SegmentationHead, rows: torch.Tensor) -> torch.Tensor:
    """The head on (N, C) rows of frozen features (detached: they get no gradient)."""
    rows = rows.detach()
    linear, hidden, output = head.linear, head.nonlinear[0], head.nonlinear[2]
    assert isinstance(linear, torch.nn.Conv2d) and isinstance(hidden, torch.nn.Conv2d)
    assert isinstance(output, torch.nn.Conv2d)
    assert linear.bias is not None and hidden.bias is not None and output.bias is not None
    codes: torch.Tensor = _RowsHead.apply(
        rows,
        linear.weight,
        linear.bias,
        hidden.weight,
        hidden.bias,
        output.weight,
        output.bias,
    )
    return codes


def _matrix(weight: torch.Tensor) -> torch.Tensor:
    """A 1 x 1 convolution's (out, in, 1, 1) weight as an (out, in) matrix (a view)."""
    return weight.view(weight.shape[0], weight.shape[1])


class _RowsHead(torch.autograd.Function):
    """codes = X W1^T + relu(X W2^T + b2) W3^T + b1 + b3 over rows X, with weight
    gradients only."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        rows: torch.Tensor,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
        w3: torch.Tensor,
        b3: torch.Tensor,
    ) -> torch.Tensor:
        hidden = torch.addmm(b2, rows, _matrix(w2).t()).relu_()
        codes = torch.addmm(b1 + b3, rows, _matrix(w1).t()).addmm_(hidden, _matrix(w3).t())
        ctx.save_for_backward(rows, hidden, w1, w2, w3)
        return codes

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        rows, hidden, w1, w2, w3 = ctx.saved_tensors  # type: ignore[attr-defined]
        grad = grad.contiguous()
        grad_t = grad.t()
        bias = grad.sum(0)
        # relu's backward: the hidden gradient where the unit was active (output > 0)
        d_hidden = torch.ops.aten.threshold_backward(grad @ _matrix(w3), hidden, 0.0)
        return (
            None,
            (grad_t @ rows).view_as(w1),
            bias,
            (d_hidden.t() @ rows).view_as(w2),
            d_hidden.sum(0),
            (grad_t @ hidden).view_as(w3),
            bias,
        )
