"""Potsdam-3 in the IIC tile layout (as STEGO and its successors use it).

`ROOT/imgs/ID.mat` holds `img` (H x W x 4: RGB and infrared; the RGB channels are used),
`ROOT/gt/ID.mat` holds `gt` (the six ISPRS classes 0..5), and the split lists
`ROOT/{unlabelled_train,labelled_train,labelled_test}.txt` name the tiles. Training uses
both train lists (labels, where a tile has them, only ever serve partitioning and are never
trained on); evaluation uses `labelled_test`, whose tiles must all have labels.
The six classes fold into three: roads and cars, buildings and clutter, vegetation and trees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fuss_ray.config import RunConfig
from fuss_ray.data.base import (
    IGNORE_INDEX,
    RootedParams,
    SegmentationDataset,
    data_root,
    digest,
    lookup_table,
    register_dataset,
)
from fuss_ray.errors import UserError

# ISPRS ids: 0 impervious surfaces, 1 building, 2 low vegetation, 3 tree, 4 car, 5 clutter.
SIX_TO_THREE = {0: 0, 4: 0, 1: 1, 5: 1, 2: 2, 3: 2}
NUM_CLASSES = 3
LUT = lookup_table(SIX_TO_THREE)
SPLIT_LISTS = {
    "train": ("unlabelled_train.txt", "labelled_train.txt"),
    "eval": ("labelled_test.txt",),
}


def _load_mat(path: Path, key: str) -> NDArray[Any]:
    from scipy.io import loadmat

    try:
        content = loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError on bad files
        raise UserError(f"{path}: not a readable .mat file ({type(exc).__name__})") from None
    if key not in content:
        raise UserError(f"{path}: no '{key}' array in this .mat file")
    out: NDArray[Any] = np.asarray(content[key])
    return out


class PotsdamParams(RootedParams):
    """`data.dataset: potsdam`: its 3 classes."""

    fixed_classes = NUM_CLASSES


@register_dataset
class PotsdamDataset(SegmentationDataset):
    """The tiles of one split; labels are required for evaluation tiles only."""

    dataset = "potsdam"
    Params = PotsdamParams
    fixed_validation = True

    @classmethod
    def open_splits(cls, config: RunConfig) -> tuple[PotsdamDataset, PotsdamDataset]:
        root = data_root(config)
        return cls(root, "train"), cls(root, "eval")

    num_classes = NUM_CLASSES

    def __init__(self, root: Path, split: str) -> None:
        self.root = root
        self.split = split
        self.skipped: list[str] = []
        if not root.is_dir():
            raise UserError(f"data.root: {root} does not exist")
        for folder in (root / "imgs", root / "gt"):
            if not folder.is_dir():
                raise UserError(
                    f"data.root: {folder} is missing (Potsdam layout: imgs/ID.mat, gt/ID.mat "
                    "and the split lists)"
                )
        self.ids: list[str] = []
        for name in SPLIT_LISTS[split]:
            listing = root / name
            if not listing.is_file():
                raise UserError(f"data.root: {listing} is missing (a Potsdam split list)")
            self.ids.extend(line.strip() for line in listing.read_text().splitlines())
        self.ids = [i for i in self.ids if i]
        if not self.ids:
            raise UserError(f"data.root: the {split} lists of {root} name no tiles")
        for tile in self.ids:
            img = root / "imgs" / f"{tile}.mat"
            if not img.is_file():
                raise UserError(f"{img}: listed tile {tile} has no image")
            if split == "eval" and not (root / "gt" / f"{tile}.mat").is_file():
                raise UserError(f"{root / 'gt' / f'{tile}.mat'}: evaluation tile has no labels")

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, index: int) -> NDArray[np.uint8]:
        path = self.root / "imgs" / f"{self.ids[index]}.mat"
        arr = _load_mat(path, "img")
        if arr.ndim != 3 or arr.shape[2] < 3:
            raise UserError(f"{path}: 'img' must be H x W x C with C >= 3, not {arr.shape}")
        rgb = arr[..., :3].astype(np.float64)
        if rgb.max() <= 1.0:  # stored as floats in [0, 1]
            rgb = rgb * 255.0
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    def has_labels(self, index: int) -> bool:
        return (self.root / "gt" / f"{self.ids[index]}.mat").is_file()

    def mask(self, index: int) -> NDArray[np.uint8]:
        path = self.root / "gt" / f"{self.ids[index]}.mat"
        if not path.is_file():  # an unlabelled training tile: every pixel ignored
            h, w = self.image(index).shape[:2]
            return np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
        gt = np.squeeze(_load_mat(path, "gt"))
        if gt.ndim != 2:
            raise UserError(f"{path}: 'gt' must be a single-channel label map, not {gt.shape}")
        valid = (gt >= 0) & (gt <= 255)
        out: NDArray[np.uint8] = np.full(gt.shape, IGNORE_INDEX, dtype=np.uint8)
        out[valid] = LUT[gt[valid].astype(np.uint8)]
        return out

    def image_id(self, index: int) -> str:
        return self.ids[index]

    def fingerprint(self) -> str:
        stats = []
        for tile in self.ids:
            img, gt = self.root / "imgs" / f"{tile}.mat", self.root / "gt" / f"{tile}.mat"
            gt_stat = (gt.stat().st_size, gt.stat().st_mtime_ns) if gt.is_file() else None
            stats.append((tile, img.stat().st_size, img.stat().st_mtime_ns, gt_stat))
        return digest("potsdam-v1", str(self.root.resolve()), self.split, stats)
