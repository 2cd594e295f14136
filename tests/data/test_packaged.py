import numpy as np
import pytest

from fuss_ray.config import validate_config
from fuss_ray.data.packaged import PRESENT, PackagedRealDataset


@pytest.mark.parametrize("sources", [["voc", "arc", "nuclei"], ["nuclei"], ["arc", "voc"]])
def test_class_count_known_to_the_config_matches_the_data(sources: list[str]) -> None:
    config = validate_config({"data": {"dataset": "packaged-real", "sources": sources}})
    train = PackagedRealDataset(sources, 128, 64, "train")
    labels = np.concatenate([train.mask(i).ravel() for i in range(len(train))])
    assert config.data.num_classes == train.num_classes == sum(len(PRESENT[s]) for s in sources)
    assert labels.max() == train.num_classes - 1  # ids are compact: the last class occurs


def test_evaluation_tiles_never_overlap_training_tiles() -> None:
    train = PackagedRealDataset(["nuclei"], 128, 64, "train")
    evaluation = PackagedRealDataset(["nuclei"], 128, 64, "eval")
    # 512 x 512: the bottom 128 rows are 4 evaluation tiles; 5 x 7 training tiles above.
    assert len(evaluation) == 4 and len(train) == 35
    lowest_train_row = max(y + 128 for _, y, _ in train.entries)
    assert lowest_train_row <= min(y for _, y, _ in evaluation.entries) == 384


def test_nuclei_masks_are_binary_and_images_are_rgb_bytes() -> None:
    ds = PackagedRealDataset(["nuclei"], 128, 64, "eval")
    img, mask = ds.image(0), ds.mask(0)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 1}
    assert 0.05 < mask.mean() < 0.6  # nuclei cover part of each tile
    assert ds.group(0) == "nuclei" and ds.image_id(0) == "nuclei/y0384_x0000"
