"""Tiny datasets in the official on-disk layouts, written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from fuss_ray.data.cityscapes import TRAIN_CITIES

# Label bands every fake mask is made of: official id -> the training id it must become.
CITYSCAPES_BANDS = {0: 255, 7: 0, 26: 19, 33: 26, 6: 255}
COCO_BANDS = {0: 9, 1: 11, 91: 17, 156: 23, 181: 24, 255: 255}
POTSDAM_BANDS = {0: 0, 1: 1, 2: 2, 3: 2, 4: 0, 5: 1}


def banded(ids: list[int], height: int, width: int) -> np.ndarray:
    """A label map of horizontal bands, one per id, in order."""
    rows = np.array_split(np.arange(height), len(ids))
    out = np.zeros((height, width), dtype=np.uint8)
    for band, value in zip(rows, ids, strict=True):
        out[band] = value
    return out


def _rgb(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_cityscapes(
    root: Path, cities: tuple[str, ...] = TRAIN_CITIES, per_city: int = 2, size: int = 48
) -> Path:
    """leftImg8bit/ and gtFine/ for train (the given cities) and val (two cities)."""
    ids = list(CITYSCAPES_BANDS)
    for split, names in (("train", cities), ("val", ("frankfurt", "munster"))):
        for c, city in enumerate(names):
            for i in range(per_city):
                stem = f"{city}_{c:06d}_{i:06d}"
                img_dir = root / "leftImg8bit" / split / city
                gt_dir = root / "gtFine" / split / city
                img_dir.mkdir(parents=True, exist_ok=True)
                gt_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_rgb(c * 100 + i, size, 2 * size)).save(
                    img_dir / f"{stem}_leftImg8bit.png"
                )
                Image.fromarray(banded(ids, size, 2 * size)).save(
                    gt_dir / f"{stem}_gtFine_labelIds.png"
                )
    return root


def make_cocostuff(root: Path, per_split: int = 6, size: int = 40) -> Path:
    """images/, annotations/ and curated lists naming all images but the last of each split."""
    ids = list(COCO_BANDS)
    for split in ("train2017", "val2017"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        (root / "curated" / split).mkdir(parents=True, exist_ok=True)
        names = [f"{i + (0 if split == 'train2017' else 500):012d}" for i in range(per_split)]
        for i, name in enumerate(names):
            Image.fromarray(_rgb(i, size, size + 8)).save(root / "images" / split / f"{name}.jpg")
            Image.fromarray(banded(ids, size, size + 8)).save(
                root / "annotations" / split / f"{name}.png"
            )
        listing = root / "curated" / split / "Coco164kFull_Stuff_Coarse_7.txt"
        listing.write_text("".join(f"{n}\n" for n in names[:-1]))
    return root


def make_potsdam(root: Path, tiles: int = 6, size: int = 32) -> Path:
    """imgs/*.mat (RGB + IR floats in [0, 1]), gt/*.mat, and the three IIC split lists.

    The first training tile is unlabelled (no gt file), as in the IIC release.
    """
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {
        "unlabelled_train": [],
        "labelled_train": [],
        "labelled_test": [],
    }
    for i in range(3 * tiles):
        name = f"{i}"
        kind = ("unlabelled_train", "labelled_train", "labelled_test")[i % 3]
        lists[kind].append(name)
        rgbir = np.random.default_rng(i).random((size, size, 4))
        savemat(root / "imgs" / f"{name}.mat", {"img": rgbir})
        if i != 0:
            gt = banded(list(POTSDAM_BANDS), size, size).astype(np.int32)
            savemat(root / "gt" / f"{name}.mat", {"gt": gt})
    for kind, names in lists.items():
        (root / f"{kind}.txt").write_text("".join(f"{n}\n" for n in names))
    return root
