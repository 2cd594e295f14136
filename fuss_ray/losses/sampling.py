"""Bilinear sampling by gathered cells and weights, deterministic on every device.

`F.grid_sample` accumulates its input gradient with atomics on CUDA, so a GPU run that
samples codes through it is not reproducible, and `torch.use_deterministic_algorithms(True)`
refuses it. Sampling a point is a weighted sum of four map cells: here the cells are
picked with `gather` from the flattened maps (whole pixel rows with `index_select` from
maps stored channels last), whose backward (a scatter-add, an index-add) has a
deterministic implementation on CUDA and is serial on the CPU. The values equal
`grid_sample(..., mode="bilinear", padding_mode="border", align_corners=True)` up to
rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Taps:
    """The four cells under each point and their bilinear weights, for maps of one size.

    Computed once per set of coordinates and reused for every map sampled there (the
    frozen features, the codes, a partner's codes), so the coordinate arithmetic runs once.
    """

    index: torch.Tensor  # (B, 4, P) int64 cells of the flattened (h*w) map of each image
    weight: torch.Tensor  # (B, 4, P) float

    def __getitem__(self, points: slice) -> Taps:
        """The taps of a range of points (every image keeps its own cells)."""
        return Taps(self.index[..., points], self.weight[..., points])


def taps(coords: torch.Tensor, height: int, width: int) -> Taps:
    """Taps of (B, P, 2) coordinates in [-1, 1] (x, then y), border-clamped, corners aligned."""
    x = ((coords[..., 0] + 1) * 0.5 * (width - 1)).clamp(0, width - 1)
    y = ((coords[..., 1] + 1) * 0.5 * (height - 1)).clamp(0, height - 1)
    x0, y0 = x.floor(), y.floor()
    dx, dy = x - x0, y - y0
    xi, yi = x0.long(), y0.long()
    # The far corner of a point on the last row or column is the same cell (weight 0).
    xj = (xi + 1).clamp(max=width - 1)
    yj = (yi + 1).clamp(max=height - 1)
    index = torch.stack((yi * width + xi, yi * width + xj, yj * width + xi, yj * width + xj), dim=1)
    weight = torch.stack(((1 - dx) * (1 - dy), dx * (1 - dy), (1 - dx) * dy, dx * dy), dim=1)
    return Taps(index, weight)


def _cells(maps: torch.Tensor, tap: Taps) -> torch.Tensor:
    """The (B, C, 4*P) map cells under the taps, corner-major per point set.

    Maps with channels-last strides (the codes of `fuss_ray.models.rows`) are read a
    whole pixel row per cell; the result is then a transposed view of (B, 4*P, C) rows.
    """
    b, c = maps.shape[:2]
    cells = tap.index[0].numel()
    if not maps.is_contiguous() and maps.permute(0, 2, 3, 1).is_contiguous():
        rows = maps.permute(0, 2, 3, 1).reshape(-1, c)  # a view: (B * h*w, C)
        picked = rows.index_select(0, _batch_cells(tap, maps.shape[2] * maps.shape[3]))
        return picked.view(b, cells, c).transpose(1, 2)
    index = tap.index.reshape(b, 1, -1).expand(b, c, cells)
    return maps.reshape(b, c, -1).gather(2, index)


def _batch_cells(tap: Taps, per_image: int) -> torch.Tensor:
    """The taps' cells as (B * 4*P,) positions in the batch's maps flattened together."""
    b = tap.index.shape[0]
    offset = torch.arange(b, device=tap.index.device).view(b, 1) * per_image
    return (tap.index.reshape(b, -1) + offset).view(-1)


def _blend(cells: torch.Tensor, tap: Taps) -> torch.Tensor:
    """(B, C, 4*P) cell values weighted into (B, C, P) samples. Any strides (a transposed
    view of pixel rows too), and a trailing axis of one (a pointwise map's output)."""
    b, corners, p = tap.index.shape
    grouped = cells.reshape(b, cells.shape[1], corners, p)  # a view where strides allow
    return (grouped * tap.weight.unsqueeze(1)).sum(dim=2)


def gather_taps(maps: torch.Tensor, tap: Taps) -> torch.Tensor:
    """Bilinear samples (B, C, P) of (B, C, h, w) maps at the taps' points."""
    return _blend(_cells(maps, tap), tap)


def bilinear_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Samples (B, C, P) of (B, C, h, w) maps at (B, P, 2) coordinates in [-1, 1]."""
    return gather_taps(maps, taps(coords, maps.shape[2], maps.shape[3]))


@dataclass(frozen=True)
class Pointwise:
    """Maps `fn(maps)` of a per-pixel function, evaluated only at the cells sampled.

    The segmentation head is one (1x1 convolutions and a per-channel dropout mask), so
    sampling its output equals running it on the sampled cells. For a set of points whose
    taps cover fewer cells than the map has (a kNN partner's 121 points on a 28 x 28
    grid), that skips the rest of the map, forward and backward. `fn` must take
    (B, C, n, 1) as it takes (B, C, h, w) maps, and draw the same random numbers.
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    maps: torch.Tensor

    def sample(self, tap: Taps) -> torch.Tensor:
        """(B, D, P) samples of fn(maps) at the taps."""
        return _blend(self.fn(_cells(self.maps, tap).unsqueeze(-1)), tap)


@dataclass(frozen=True)
class DistinctCells:
    """Maps of a per-pixel function given on pixel rows, evaluated once per distinct cell.

    Nearby points share cells: a kNN partner's 4 x 121 taps on a 28 x 28 map cover about
    360 distinct cells of the 784. `fn` takes those cells' (U, C) feature rows, each
    row's image (U,) and the batch size (to draw one dropout mask per image, as for the
    whole maps), and returns their (U, D) values.
    """

    fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
    maps: torch.Tensor

    def sample(self, tap: Taps) -> torch.Tensor:
        """(B, D, P) samples of the function's maps at the taps."""
        b, c, h, w = self.maps.shape
        cells, inverse = torch.unique(_batch_cells(tap, h * w), return_inverse=True)
        image = torch.div(cells, h * w, rounding_mode="floor")
        feats = self.maps.view(b, c, h * w)[image, :, cells - image * (h * w)]  # (U, C)
        values = self.fn(feats, image, b)  # (U, D)
        picked = values.index_select(0, inverse).view(b, -1, values.shape[1])
        return _blend(picked.transpose(1, 2), tap)


# What the loss samples codes from: maps, or a per-pixel function of feature maps.
Sampled = torch.Tensor | Pointwise | DistinctCells


def sample(maps: Sampled, tap: Taps) -> torch.Tensor:
    """Bilinear samples (B, C, P) of maps, or of a pointwise function of them."""
    return gather_taps(maps, tap) if isinstance(maps, torch.Tensor) else maps.sample(tap)
