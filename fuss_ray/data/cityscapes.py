"""Cityscapes-27 in its official layout, partitioned naturally by city.

`ROOT/leftImg8bit/{train,val}/CITY/CITY_SEQ_FRAME_leftImg8bit.png` with
`ROOT/gtFine/{train,val}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png`. The 27 classes of the
USS benchmark are the label ids 7 (road) to 33 (bicycle); every other id (void, ego
vehicle, rectification border, out of ROI, static, dynamic, ground, license plate) is ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fuss_ray.config import RunConfig
from fuss_ray.data.base import data_root, data_settings, lookup_table, register_dataset
from fuss_ray.data.folder import FileTreeParams, FolderDataset
from fuss_ray.errors import UserError

NUM_CLASSES = 27
FIRST_ID = 7  # road; ids 7..33 become 0..26
LUT = lookup_table({official: official - FIRST_ID for official in range(7, 34)})

# The 18 training cities. With `partition.kind: natural`, city i of this (alphabetical)
# list goes to client i mod K: 3 clients get 6 cities each, 6 get 3, 18 get one.
TRAIN_CITIES = (
    "aachen",
    "bochum",
    "bremen",
    "cologne",
    "darmstadt",
    "dusseldorf",
    "erfurt",
    "hamburg",
    "hanover",
    "jena",
    "krefeld",
    "monchengladbach",
    "strasbourg",
    "stuttgart",
    "tubingen",
    "ulm",
    "weimar",
    "zurich",
)

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


class CityscapesParams(FileTreeParams):
    """`data.dataset: cityscapes`: its 27 classes."""

    fixed_classes = 27


@register_dataset
class CityscapesDataset(FolderDataset):
    """One official split (train or val); each image's group is its city."""

    dataset = "cityscapes"
    Params = CityscapesParams
    fixed_validation = True

    @classmethod
    def open_splits(cls, config: RunConfig) -> tuple[CityscapesDataset, CityscapesDataset]:
        """The official train split, and val as the test set."""
        root, strict = data_root(config), data_settings(config, CityscapesParams).strict
        return cls(root, "train", strict), cls(root, "val", strict)

    kind = "cityscapes-v1"

    def __init__(
        self,
        root: Path,
        split: str,
        strict: bool = False,
        entries: list[tuple[Path, Path, str]] | None = None,
    ) -> None:
        self.split_name = split
        super().__init__(root, NUM_CLASSES, entries, strict)

    def _scan(self, root: Path) -> list[tuple[Path, Path, str]]:
        if not root.is_dir():
            raise UserError(f"data.root: {root} does not exist")
        images_dir = root / "leftImg8bit" / self.split_name
        labels_dir = root / "gtFine" / self.split_name
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                raise UserError(
                    f"data.root: {folder} is missing (Cityscapes layout: "
                    f"leftImg8bit/{self.split_name}/CITY/ and gtFine/{self.split_name}/CITY/)"
                )
        entries = []
        for city_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
            for img in sorted(city_dir.glob(f"*{IMAGE_SUFFIX}")):
                stem = img.name.removesuffix(IMAGE_SUFFIX)
                label = labels_dir / city_dir.name / f"{stem}{LABEL_SUFFIX}"
                if not label.is_file():
                    raise UserError(f"{img}: no label file at {label}")
                if self._usable(img, label):
                    entries.append((img, label, city_dir.name))
        if not entries:
            raise UserError(f"{images_dir}: no *{IMAGE_SUFFIX} images in any city folder")
        return entries

    def map_labels(self, arr: NDArray[Any], path: Path) -> NDArray[np.uint8]:
        if arr.dtype != np.uint8:
            raise UserError(f"{path}: expected 8-bit labelIds, found {arr.dtype}")
        out: NDArray[np.uint8] = LUT[arr]
        return out

    def image_id(self, index: int) -> str:
        img = self.entries[index][0]
        return f"{self.split_name}/{img.parent.name}/{img.name.removesuffix(IMAGE_SUFFIX)}"
