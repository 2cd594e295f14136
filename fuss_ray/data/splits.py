"""A run's training, validation and test sets, from the adapter its config names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuss_ray.data.base import SegmentationDataset, Splits, Subset, validation_positions
from fuss_ray.data.transforms import FiveCrops
from fuss_ray.plugins import DATASETS

if TYPE_CHECKING:
    from fuss_ray.config import RunConfig


def build_datasets(config: RunConfig) -> Splits:
    """The training, validation and evaluation (test) sets named by the config.

    Benchmarks come with their official train/val split (their val is the test set here);
    a folder dataset is split by a seeded hold-out. The validation set is then carved out
    of the training images (`data.val_fraction`). Five-crop, when asked for, applies to
    training images only.
    """
    data = config.data
    adapter = DATASETS[data.dataset]
    full, evaluation = adapter.open_splits(config)
    held = validation_positions(full, data.val_fraction, config.seed, adapter.fixed_validation)
    train: SegmentationDataset = full
    val: SegmentationDataset | None = None
    if held:
        kept = sorted(set(range(len(full))) - set(held))
        train, val = Subset(full, kept, "train"), Subset(full, held, "val")
    if config.features.five_crop:
        train = FiveCrops(train)
    return Splits(train, val, evaluation)
