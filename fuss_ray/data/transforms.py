"""Dataset views that change what an "image" is, before partitioning and extraction."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fuss_ray.data.base import SegmentationDataset, digest

FIVE_CROP_NAMES = ("tl", "tr", "bl", "br", "c")


def five_crop_box(height: int, width: int, which: int) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of crop `which` at half the image's size."""
    ch, cw = height // 2, width // 2
    corners = [
        (0, 0),
        (0, width - cw),
        (height - ch, 0),
        (height - ch, width - cw),
        ((height - ch) // 2, (width - cw) // 2),
    ]
    top, left = corners[which]
    return top, left, ch, cw


class FiveCrops(SegmentationDataset):
    """Each image as five half-size crops (four corners and the centre), STEGO's training view.

    Crops keep their image's group, so a natural (per-city) partition keeps them together;
    the extraction that follows resizes each crop to the input size and centre-crops it.
    """

    def __init__(self, base: SegmentationDataset) -> None:
        self.base = base
        self.num_classes = base.num_classes
        self.skipped = base.skipped
        # The last decoded source image and mask: the five crops of an image are read one
        # after another (partitioning, extraction), so each file is decoded once, not 5 times.
        self._last: dict[str, tuple[int, NDArray[np.uint8]]] = {}

    def _source(self, kind: str, index: int) -> NDArray[np.uint8]:
        held = self._last.get(kind)
        if held is None or held[0] != index:
            array = self.base.image(index) if kind == "image" else self.base.mask(index)
            held = (index, array)
            self._last[kind] = held
        return held[1]

    def __len__(self) -> int:
        return 5 * len(self.base)

    def _crop(self, array: NDArray[np.uint8], index: int) -> NDArray[np.uint8]:
        top, left, ch, cw = five_crop_box(array.shape[0], array.shape[1], index % 5)
        return array[top : top + ch, left : left + cw].copy()

    def image(self, index: int) -> NDArray[np.uint8]:
        return self._crop(self._source("image", index // 5), index)

    def mask(self, index: int) -> NDArray[np.uint8]:
        return self._crop(self._source("mask", index // 5), index)

    def image_id(self, index: int) -> str:
        return f"{self.base.image_id(index // 5)}#{FIVE_CROP_NAMES[index % 5]}"

    def group(self, index: int) -> str:
        return self.base.group(index // 5)

    def fingerprint(self) -> str:
        return digest("five-crop-v1", self.base.fingerprint())
