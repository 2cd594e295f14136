"""The dataset interface every source implements, and the factory that picks one."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image

if TYPE_CHECKING:
    from fuss_ray.config import RunConfig

IGNORE_INDEX = 255


class SegmentationDataset(ABC):
    """Images with pixel labels, addressed by position.

    Labels are used only to partition (simulating label skew) and to evaluate; training
    never sees them.
    """

    num_classes: int
    skipped: list[str] = []  # noqa: RUF012  ("path: reason" of files left out, if any)

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def image(self, index: int) -> NDArray[np.uint8]:
        """An RGB image, H x W x 3."""

    @abstractmethod
    def mask(self, index: int) -> NDArray[np.uint8]:
        """A label map, H x W, with IGNORE_INDEX for unlabelled pixels."""

    @abstractmethod
    def image_id(self, index: int) -> str: ...

    def group(self, index: int) -> str:
        """The natural domain of an image (a city, a sub-folder); one group by default."""
        return ""

    @abstractmethod
    def fingerprint(self) -> str:
        """A stable digest of the content, so that a feature cache is never reused wrongly."""


def resize_center_crop(
    array: NDArray[np.uint8], size: int, nearest: bool = False
) -> NDArray[np.uint8]:
    """Resize the shorter side to `size`, then take the centre square (the USS protocol)."""
    img = Image.fromarray(array)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    img = img.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def lookup_table(mapping: dict[int, int]) -> NDArray[np.uint8]:
    """A 256-entry table sending official label ids to training ids, the rest to IGNORE_INDEX.

    Indexing a uint8 mask with it maps a whole image in one vectorised step.
    """
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for official, train_id in mapping.items():
        table[official] = train_id
    return table


def label_histograms(dataset: SegmentationDataset, size: int) -> NDArray[np.int64]:
    """Pixels per class of every image at evaluation resolution, for partitioning."""
    counts = np.zeros((len(dataset), dataset.num_classes), dtype=np.int64)
    for i in range(len(dataset)):
        m = resize_center_crop(dataset.mask(i), size, nearest=True).reshape(-1)
        m = m[m < dataset.num_classes]
        counts[i] = np.bincount(m, minlength=dataset.num_classes)[: dataset.num_classes]
    return counts


def digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def build_datasets(config: RunConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training and evaluation datasets named by the config.

    Benchmarks come with their official train/val split; a folder dataset is split by a
    seeded hold-out. Five-crop, when asked for, applies to training images only.
    """
    train, evaluation = _named_datasets(config)
    if config.features.five_crop:
        from fuss_ray.data.transforms import FiveCrops

        train = FiveCrops(train)
    return train, evaluation


def _named_datasets(config: RunConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    data = config.data
    if data.dataset == "synthetic":
        from fuss_ray.data.synthetic import SyntheticScenes

        return (
            SyntheticScenes(data, config.seed, split="train"),
            SyntheticScenes(data, config.seed, split="eval"),
        )
    if data.dataset == "packaged-real":
        from fuss_ray.data.packaged import PackagedRealDataset

        return (
            PackagedRealDataset(data.sources, data.tile_size, data.tile_stride, "train"),
            PackagedRealDataset(data.sources, data.tile_size, data.tile_stride, "eval"),
        )
    assert data.root is not None
    root = data.root.expanduser()
    if data.dataset == "cityscapes":
        from fuss_ray.data.cityscapes import CityscapesDataset

        return (
            CityscapesDataset(root, "train", data.strict),
            CityscapesDataset(root, "val", data.strict),
        )
    if data.dataset == "cocostuff":
        from fuss_ray.data.cocostuff import SPLITS, CocoStuffDataset

        return (
            CocoStuffDataset(root, SPLITS["train"], data.curated_list, data.strict),
            CocoStuffDataset(root, SPLITS["eval"], data.curated_list, data.strict),
        )
    if data.dataset == "potsdam":
        from fuss_ray.data.potsdam import PotsdamDataset

        return PotsdamDataset(root, "train"), PotsdamDataset(root, "eval")
    from fuss_ray.data.folder import FolderDataset

    full = FolderDataset(root, data.num_classes, strict=data.strict)
    return full.split(data.eval_fraction, config.seed)
