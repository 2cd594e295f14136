"""COCO-Stuff-27: the 2017 images, the stuffthingmaps labels and the curated image lists.

Layout (as the COCO-Stuff release and the STEGO curated lists unpack):
`ROOT/images/{train2017,val2017}/ID.jpg`, `ROOT/annotations/{train2017,val2017}/ID.png`
(stuffthingmaps: fine ids 0..181, 255 unlabelled) and
`ROOT/curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse_7.txt` (one image id per line).
The 182 fine classes fold into the 27 COCO-Stuff supercategories: 12 thing and 15 stuff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from fuss_ray.config import RunConfig
from fuss_ray.data.base import data_root, data_settings, lookup_table, register_dataset
from fuss_ray.data.folder import FileTreeParams, FolderDataset
from fuss_ray.errors import UserError

COARSE_CLASSES = (
    "electronic",
    "appliance",
    "food-things",
    "furniture-things",
    "indoor",
    "kitchen",
    "accessory",
    "animal",
    "outdoor",
    "person",
    "sports",
    "vehicle",
    "ceiling",
    "floor",
    "food-stuff",
    "furniture-stuff",
    "raw-material",
    "textile",
    "wall",
    "window",
    "building",
    "ground",
    "plant",
    "sky",
    "solid",
    "structural",
    "water",
)

# Thing classes: stuffthingmaps ids (COCO category id - 1, unused ids included) by
# supercategory.
_THINGS: dict[str, range] = {
    "person": range(0, 1),
    "vehicle": range(1, 9),
    "outdoor": range(9, 15),
    "animal": range(15, 25),
    "accessory": range(25, 33),
    "sports": range(33, 43),
    "kitchen": range(43, 51),
    "food-things": range(51, 61),
    "furniture-things": range(61, 71),
    "electronic": range(71, 77),
    "appliance": range(77, 83),
    "indoor": range(83, 91),
}

# Stuff classes in id order (91 = banner ... 181 = wood) with their supercategory.
_STUFF: tuple[tuple[str, str], ...] = (
    ("banner", "textile"),
    ("blanket", "textile"),
    ("branch", "plant"),
    ("bridge", "building"),
    ("building-other", "building"),
    ("bush", "plant"),
    ("cabinet", "furniture-stuff"),
    ("cage", "structural"),
    ("cardboard", "raw-material"),
    ("carpet", "floor"),
    ("ceiling-other", "ceiling"),
    ("ceiling-tile", "ceiling"),
    ("cloth", "textile"),
    ("clothes", "textile"),
    ("clouds", "sky"),
    ("counter", "furniture-stuff"),
    ("cupboard", "furniture-stuff"),
    ("curtain", "textile"),
    ("desk-stuff", "furniture-stuff"),
    ("dirt", "ground"),
    ("door-stuff", "furniture-stuff"),
    ("fence", "structural"),
    ("floor-marble", "floor"),
    ("floor-other", "floor"),
    ("floor-stone", "floor"),
    ("floor-tile", "floor"),
    ("floor-wood", "floor"),
    ("flower", "plant"),
    ("fog", "water"),
    ("food-other", "food-stuff"),
    ("fruit", "food-stuff"),
    ("furniture-other", "furniture-stuff"),
    ("grass", "plant"),
    ("gravel", "ground"),
    ("ground-other", "ground"),
    ("hill", "solid"),
    ("house", "building"),
    ("leaves", "plant"),
    ("light", "furniture-stuff"),
    ("mat", "textile"),
    ("metal", "raw-material"),
    ("mirror-stuff", "furniture-stuff"),
    ("moss", "plant"),
    ("mountain", "solid"),
    ("mud", "ground"),
    ("napkin", "textile"),
    ("net", "structural"),
    ("paper", "raw-material"),
    ("pavement", "ground"),
    ("pillow", "textile"),
    ("plant-other", "plant"),
    ("plastic", "raw-material"),
    ("platform", "ground"),
    ("playingfield", "ground"),
    ("railing", "structural"),
    ("railroad", "ground"),
    ("river", "water"),
    ("road", "ground"),
    ("rock", "solid"),
    ("roof", "building"),
    ("rug", "textile"),
    ("salad", "food-stuff"),
    ("sand", "ground"),
    ("sea", "water"),
    ("shelf", "furniture-stuff"),
    ("sky-other", "sky"),
    ("skyscraper", "building"),
    ("snow", "ground"),
    ("solid-other", "solid"),
    ("stairs", "furniture-stuff"),
    ("stone", "solid"),
    ("straw", "plant"),
    ("structural-other", "structural"),
    ("table", "furniture-stuff"),
    ("tent", "building"),
    ("textile-other", "textile"),
    ("towel", "textile"),
    ("tree", "plant"),
    ("vegetable", "food-stuff"),
    ("wall-brick", "wall"),
    ("wall-concrete", "wall"),
    ("wall-other", "wall"),
    ("wall-panel", "wall"),
    ("wall-stone", "wall"),
    ("wall-tile", "wall"),
    ("wall-wood", "wall"),
    ("water-other", "water"),
    ("waterdrops", "water"),
    ("window-blind", "window"),
    ("window-other", "window"),
    ("wood", "solid"),
)
FIRST_STUFF_ID = 91


def fine_to_coarse() -> dict[int, int]:
    """The 182 stuffthingmaps ids to the 27 coarse training ids."""
    coarse = {name: i for i, name in enumerate(COARSE_CLASSES)}
    mapping = {fine: coarse[sup] for sup, ids in _THINGS.items() for fine in ids}
    for offset, (_, sup) in enumerate(_STUFF):
        mapping[FIRST_STUFF_ID + offset] = coarse[sup]
    return mapping


NUM_CLASSES = len(COARSE_CLASSES)
LUT = lookup_table(fine_to_coarse())
SPLITS = {"train": "train2017", "eval": "val2017"}


class CocoStuffParams(FileTreeParams):
    """`data.dataset: cocostuff`: its 27 coarse classes, on a curated list of images."""

    fixed_classes = NUM_CLASSES
    curated_list: str | None = Field(
        "Coco164kFull_Stuff_Coarse_7.txt",
        description="the image list under curated/SPLIT/ (null: every image)",
    )


@register_dataset
class CocoStuffDataset(FolderDataset):
    """One split (train2017 or val2017), restricted to a curated list unless told otherwise."""

    dataset = "cocostuff"
    Params = CocoStuffParams
    fixed_validation = True

    @classmethod
    def open_splits(cls, config: RunConfig) -> tuple[CocoStuffDataset, CocoStuffDataset]:
        """The curated train list, and the curated val list as the test set."""
        root, d = data_root(config), data_settings(config, CocoStuffParams)
        return (
            cls(root, SPLITS["train"], d.curated_list, d.strict),
            cls(root, SPLITS["eval"], d.curated_list, d.strict),
        )

    kind = "cocostuff-v1"

    def __init__(
        self,
        root: Path,
        split: str,
        curated_list: str | None,
        strict: bool = False,
        entries: list[tuple[Path, Path, str]] | None = None,
    ) -> None:
        self.split_name = split
        self.curated_list = curated_list
        super().__init__(root, NUM_CLASSES, entries, strict)

    def _image_ids(self, images_dir: Path) -> list[str]:
        if self.curated_list is None:
            return sorted(p.stem for p in images_dir.glob("*.jpg"))
        listing = self.root / "curated" / self.split_name / self.curated_list
        if not listing.is_file():
            raise UserError(
                f"data.curated_list: {listing} is missing (set data.curated_list: null to use "
                "every image of the split)"
            )
        return [line.strip() for line in listing.read_text().splitlines() if line.strip()]

    def _scan(self, root: Path) -> list[tuple[Path, Path, str]]:
        if not root.is_dir():
            raise UserError(f"data.root: {root} does not exist")
        images_dir = root / "images" / self.split_name
        labels_dir = root / "annotations" / self.split_name
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                raise UserError(
                    f"data.root: {folder} is missing (COCO-Stuff layout: "
                    f"images/{self.split_name}/ID.jpg and annotations/{self.split_name}/ID.png)"
                )
        entries = []
        for image_id in self._image_ids(images_dir):
            img, label = images_dir / f"{image_id}.jpg", labels_dir / f"{image_id}.png"
            for path in (img, label):
                if not path.is_file():
                    raise UserError(f"{path}: listed image {image_id} has no such file")
            if self._usable(img, label):
                entries.append((img, label, ""))
        if not entries:
            raise UserError(f"{images_dir}: no images to use")
        return entries

    def map_labels(self, arr: NDArray[Any], path: Path) -> NDArray[np.uint8]:
        if arr.dtype != np.uint8:
            raise UserError(f"{path}: expected 8-bit stuffthingmaps labels, found {arr.dtype}")
        out: NDArray[np.uint8] = LUT[arr]
        return out

    def image_id(self, index: int) -> str:
        return f"{self.split_name}/{self.entries[index][0].stem}"
