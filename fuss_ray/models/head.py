"""The STEGO segmentation head and the learned centroids that FUSS federates."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

ModelState = dict[str, NDArray[np.float32]]


class SegmentationHead(nn.Module):
    """Maps frozen features (B, D', h, w) to codes (B, D, h, w): linear + nonlinear 1x1 branches.

    One Dropout2d mask is shared by both branches, as in STEGO.
    """

    def __init__(self, in_dim: int, code_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.drop = nn.Dropout2d(dropout)
        self.linear = nn.Conv2d(in_dim, code_dim, 1)
        self.nonlinear = nn.Sequential(
            nn.Conv2d(in_dim, in_dim, 1), nn.ReLU(), nn.Conv2d(in_dim, code_dim, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.drop(features)
        out: torch.Tensor = self.linear(x) + self.nonlinear(x)
        return out


class FussModel(nn.Module):
    """Head plus C centroids; a pixel's cluster is the centroid of highest cosine."""

    def __init__(
        self, in_dim: int, code_dim: int, num_centroids: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.head = SegmentationHead(in_dim, code_dim, dropout)
        self.centroids = nn.Parameter(torch.randn(num_centroids, code_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(features)
        return out

    @torch.no_grad()
    def code(self, features: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Codes upsampled to `size` (the label grid), before normalisation."""
        code: torch.Tensor = self.head(features)
        if size is not None and code.shape[-1] != size:
            code = F.interpolate(code, size=(size, size), mode="bilinear", align_corners=False)
        return code

    @torch.no_grad()
    def similarity(self, code: torch.Tensor) -> torch.Tensor:
        """Cosine of every pixel's code to every centroid: (B, C, H, W)."""
        cents = F.normalize(self.centroids, dim=1)
        return torch.einsum("bdhw,cd->bchw", F.normalize(code, dim=1), cents)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Cluster ids per pixel, after upsampling codes to `size` (the label grid)."""
        return self.similarity(self.code(features, size)).argmax(dim=1)


def model_state(model: FussModel) -> ModelState:
    """Parameters as numpy arrays: the unit that crosses process boundaries and is averaged."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_model_state(model: FussModel, state: ModelState) -> None:
    """Copy a state into the model. A state that came through Ray's object store (or a
    memory map) is read-only; torch only reads it here, but would warn, so such arrays
    are copied first (a model state is small)."""

    def tensor(v: np.ndarray) -> torch.Tensor:
        a = np.asarray(v)
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    model.load_state_dict({k: tensor(v) for k, v in state.items()})
