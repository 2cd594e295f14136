"""The dataset interface every source implements, and the factory that picks one."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydantic import Field

from fuss_ray.config import DataParams
from fuss_ray.plugins import DATASETS
from fuss_ray.seeds import Stream, seed_stream

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
    dataset: ClassVar[str]  # its `data.dataset` name, for adapters in the registry
    # The settings its `data` section may hold (the config validates the section by it).
    Params: ClassVar[type[DataParams]] = DataParams
    # Benchmarks: the validation images are fixed (the same for every seed), not drawn.
    fixed_validation: ClassVar[bool] = False

    @classmethod
    def open_splits(cls, config: RunConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
        """The full training set and the test set of a run's `data` section (adapters)."""
        raise NotImplementedError(f"{cls.__name__} is not a registered dataset adapter")

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

    def has_labels(self, index: int) -> bool:
        """Whether its mask holds labels (unlabelled training tiles cannot validate)."""
        return True

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


class Splits(NamedTuple):
    """A run's three sets of images.

    `train` is what clients hold (labels never reach training); `val` is a labelled set
    carved out of the training images for selection (searches, early choices), never
    trained on; `eval` is the test set, touched to report.
    """

    train: SegmentationDataset
    val: SegmentationDataset | None
    eval: SegmentationDataset


class Subset(SegmentationDataset):
    """Some images of another dataset, by position: a validation set, or what it leaves."""

    def __init__(self, base: SegmentationDataset, positions: list[int], role: str) -> None:
        self.base = base
        self.positions = list(positions)
        self.role = role
        self.num_classes = base.num_classes
        # Unreadable files of the source are reported once, with the training part.
        self.skipped = list(base.skipped) if role == "train" else []

    def __len__(self) -> int:
        return len(self.positions)

    def image(self, index: int) -> NDArray[np.uint8]:
        return self.base.image(self.positions[index])

    def mask(self, index: int) -> NDArray[np.uint8]:
        return self.base.mask(self.positions[index])

    def image_id(self, index: int) -> str:
        return self.base.image_id(self.positions[index])

    def group(self, index: int) -> str:
        return self.base.group(self.positions[index])

    def has_labels(self, index: int) -> bool:
        return self.base.has_labels(self.positions[index])

    def fingerprint(self) -> str:
        chosen = hashlib.sha256(np.asarray(self.positions, dtype=np.int64).tobytes()).hexdigest()
        return digest("subset-v1", self.base.fingerprint(), self.role, chosen)


def validation_positions(
    dataset: SegmentationDataset, fraction: float, seed: int, fixed: bool
) -> list[int]:
    """Which training images form the validation set.

    Per natural group (a domain, a city), a share `fraction` of its labelled images, at
    least one of any group that has two or more, so every domain is represented. `fixed`
    (the public benchmarks): evenly spaced through the group's images in their listed
    order, the same for every seed, so results on them compare across papers' settings;
    otherwise a seeded random draw.
    """
    if fraction <= 0:
        return []
    by_group: dict[str, list[int]] = {}
    for i in range(len(dataset)):
        if dataset.has_labels(i):
            by_group.setdefault(dataset.group(i), []).append(i)
    rng = np.random.default_rng(seed_stream(Stream.VALIDATION, seed))
    chosen: list[int] = []
    for group in sorted(by_group):
        members = by_group[group]
        if len(members) < 2:
            continue
        m = max(1, round(fraction * len(members)))
        if fixed:
            step = len(members) / m
            chosen.extend(members[int((j + 1) * step) - 1] for j in range(m))
        else:
            chosen.extend(int(i) for i in rng.choice(members, size=m, replace=False))
    return sorted(chosen)


class RootedParams(DataParams):
    """The settings of a dataset read from a folder of files."""

    root: Path = Field(description="the folder the dataset is read from")

    def root_path(self) -> Path | None:
        return self.root


_D = TypeVar("_D", bound=type[SegmentationDataset])
_P = TypeVar("_P", bound=DataParams)


def data_settings(config: RunConfig, kind: type[_P]) -> _P:
    """A run's `data` section as the adapter's own settings: the config validated it by
    the adapter's `Params`, so this holds for every config a run is given."""
    params = config.data
    if not isinstance(params, kind):
        raise TypeError(f"data: {type(params).__name__} is not {kind.__name__}")
    return params


def data_root(config: RunConfig) -> Path:
    """`data.root`, for the adapters that read a folder (their settings require it)."""
    return data_settings(config, RootedParams).root.expanduser()


def register_dataset(cls: _D) -> _D:
    """Class decorator: make a dataset adapter available by its `dataset` name."""
    return DATASETS.register(cls)  # type: ignore[no-any-return]
