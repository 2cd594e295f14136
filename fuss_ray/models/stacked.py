"""G segmentation heads and their centroids as one set of stacked tensors.

`federation.client_batch` trains several clients of a host as one computation: each
parameter of `FussModel` gains a leading client dimension, and the head's 1 x 1
convolutions become batched matrix products, one per layer for all G clients. Client j's
result depends on slice j alone (every product and reduction is per client), so the bits
do not depend on G, nor on which clients share a stack; they differ from the per-client
path's (a convolution, not a batched product) by float rounding.

Images of all clients are image-major, (G * B, C, h, w), as the per-client path has them
for one client: the loss's per-image work (sampling, normalising) runs unchanged over the
G * B images; the head reorders them to (G, C, B * h * w) for its products and back.
"""

from __future__ import annotations

import numpy as np
import torch

from fuss_ray.models.head import FussModel, ModelState

StackedParams = dict[str, torch.Tensor]

# The head's layers in the order FussModel applies them: (weight, bias) per 1 x 1 conv.
LINEAR = ("head.linear.weight", "head.linear.bias")
HIDDEN = ("head.nonlinear.0.weight", "head.nonlinear.0.bias")
OUTPUT = ("head.nonlinear.2.weight", "head.nonlinear.2.bias")
CENTROIDS = "centroids"


def stack_states(states: list[ModelState], device: torch.device) -> StackedParams:
    """One (G, *shape) tensor per parameter of the G states, on `device`."""
    return {
        k: torch.from_numpy(np.stack([np.asarray(s[k], dtype=np.float32) for s in states])).to(
            device
        )
        for k in states[0]
    }


def unstack_states(params: StackedParams) -> list[ModelState]:
    """The G per-client states of stacked parameters (the inverse of `stack_states`)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in params.items()}
    g = next(iter(arrays.values())).shape[0]
    return [{k: v[j].copy() for k, v in arrays.items()} for j in range(g)]


def trainable(params: StackedParams) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The head's parameters (in `FussModel.head.parameters()` order) and the centroids,
    made leaves that keep gradients: the optimiser's two groups."""
    for v in params.values():
        v.requires_grad_(True)
    head = [params[k] for k in (*LINEAR, *HIDDEN, *OUTPUT)]
    return head, [params[CENTROIDS]]


def _layer(params: StackedParams, keys: tuple[str, str], x: torch.Tensor) -> torch.Tensor:
    """A 1 x 1 convolution per client: (G, C_out, C_in) @ (G, C_in, N) + bias."""
    weight, bias = params[keys[0]], params[keys[1]]
    g, out_dim, in_dim = weight.shape[:3]
    return torch.baddbmm(bias.view(g, out_dim, 1), weight.view(g, out_dim, in_dim), x)


def stacked_head(
    params: StackedParams, features: torch.Tensor, masks: torch.Tensor | None = None
) -> torch.Tensor:
    """Codes (G * B, D, h, w) of features (G * B, D', h, w) under G heads.

    `masks` (G * B, D') is each image's dropout mask, already scaled by 1 / (1 - p) as
    `Dropout2d` scales it (None: no dropout, as in eval mode).
    """
    g = params[LINEAR[0]].shape[0]
    n, in_dim, h, w = features.shape
    b = n // g
    x = features if masks is None else features * masks.view(n, in_dim, 1, 1)
    # (G, B, D', hw) -> (G, D', B * hw): every client's pixels are the columns of its products.
    x = x.view(g, b, in_dim, h * w).transpose(1, 2).reshape(g, in_dim, b * h * w)
    hidden = torch.relu_(_layer(params, HIDDEN, x))
    out = _layer(params, LINEAR, x) + _layer(params, OUTPUT, hidden)
    code_dim = out.shape[1]
    return out.view(g, code_dim, b, h * w).transpose(1, 2).reshape(n, code_dim, h, w)


@torch.no_grad()
def reference_head(params: StackedParams, features: torch.Tensor) -> torch.Tensor:
    """Codes (G, B, D, h, w) of features (G, B, D', h, w) under stacked parameters, as a
    reference model in eval mode computes them (no dropout, no gradient)."""
    g, b = features.shape[:2]
    codes = stacked_head(params, features.reshape(g * b, *features.shape[2:]))
    return codes.view(g, b, *codes.shape[1:])


def draw_masks(
    batch: int, channels: int, p: float, calls: int, generator: torch.Generator
) -> torch.Tensor | None:
    """Dropout masks (calls, B, D') as `Dropout2d` draws them, call after call, from a
    client's generator seeded as the per-client path seeds torch (`torch.manual_seed`).
    None where p = 0 (dropout draws nothing then)."""
    if p <= 0:
        return None
    out = [
        torch.empty(batch, channels, 1, 1).bernoulli_(1 - p, generator=generator).div_(1 - p)
        for _ in range(calls)
    ]
    return torch.stack(out).view(calls, batch, channels)


def model_dropout(model: FussModel) -> float:
    return float(model.head.drop.p)
