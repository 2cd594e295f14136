from pathlib import Path

import numpy as np
import pytest

from fuss_ray.data.cocostuff import COARSE_CLASSES, CocoStuffDataset, fine_to_coarse
from fuss_ray.errors import UserError
from tests.data.fake_trees import COCO_BANDS, banded, make_cocostuff


def test_the_182_fine_ids_fold_into_12_thing_and_15_stuff_classes() -> None:
    mapping = fine_to_coarse()
    assert sorted(mapping) == list(range(182))
    assert sorted(set(mapping.values())) == list(range(27))
    things = {mapping[i] for i in range(91)}
    assert things == set(range(12))  # 12 thing supercategories first, then 15 stuff
    # Hand-checked entries: person, car, banner (textile), sky-other, wall-brick, wood.
    name = {i: COARSE_CLASSES[c] for i, c in mapping.items()}
    assert (name[0], name[2], name[91], name[156], name[170], name[181]) == (
        "person",
        "vehicle",
        "textile",
        "sky",
        "wall",
        "solid",
    )


def test_masks_are_mapped_and_unlabelled_pixels_ignored(tmp_path: Path) -> None:
    root = make_cocostuff(tmp_path)
    ds = CocoStuffDataset(root, "train2017", "Coco164kFull_Stuff_Coarse_7.txt")
    np.testing.assert_array_equal(ds.mask(0), banded(list(COCO_BANDS.values()), 40, 48))
    assert ds.num_classes == 27


def test_the_curated_list_selects_images_and_null_takes_every_image(tmp_path: Path) -> None:
    root = make_cocostuff(tmp_path)
    curated = CocoStuffDataset(root, "val2017", "Coco164kFull_Stuff_Coarse_7.txt")
    everything = CocoStuffDataset(root, "val2017", None)
    assert len(curated) == 5 and len(everything) == 6
    assert curated.image_id(0) == "val2017/000000000500"


def test_a_listed_image_without_its_file_is_named(tmp_path: Path) -> None:
    root = make_cocostuff(tmp_path)
    (root / "annotations/train2017/000000000002.png").unlink()
    with pytest.raises(UserError, match=r"000000000002\.png: listed image"):
        CocoStuffDataset(root, "train2017", "Coco164kFull_Stuff_Coarse_7.txt")


def test_a_missing_curated_list_is_named(tmp_path: Path) -> None:
    root = make_cocostuff(tmp_path)
    with pytest.raises(UserError, match=r"data\.curated_list: .*other\.txt is missing"):
        CocoStuffDataset(root, "train2017", "other.txt")
