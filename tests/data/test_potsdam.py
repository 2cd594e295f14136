from pathlib import Path

import numpy as np
import pytest

from fuss_ray.data.potsdam import PotsdamDataset
from fuss_ray.errors import UserError
from tests.data.fake_trees import POTSDAM_BANDS, banded, make_potsdam


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_potsdam(tmp_path_factory.mktemp("potsdam"))


def test_six_classes_fold_into_three(tree: Path) -> None:
    ds = PotsdamDataset(tree, "eval")
    np.testing.assert_array_equal(ds.mask(0), banded(list(POTSDAM_BANDS.values()), 32, 32))
    assert ds.num_classes == 3


def test_training_uses_both_train_lists_and_unlabelled_tiles_are_ignored(tree: Path) -> None:
    train, evaluation = PotsdamDataset(tree, "train"), PotsdamDataset(tree, "eval")
    assert len(train) == 12 and len(evaluation) == 6
    first = train.ids.index("0")
    assert (train.mask(first) == 255).all()


def test_rgb_channels_are_taken_and_scaled_to_bytes(tree: Path) -> None:
    from scipy.io import loadmat

    ds = PotsdamDataset(tree, "eval")
    raw = loadmat(str(tree / "imgs" / f"{ds.ids[0]}.mat"))["img"]
    img = ds.image(0)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, np.rint(raw[..., :3] * 255).astype(np.uint8))


def test_an_evaluation_tile_without_labels_is_named(tmp_path: Path) -> None:
    root = make_potsdam(tmp_path / "p", tiles=2)
    (root / "gt" / "2.mat").unlink()
    with pytest.raises(UserError, match=r"gt/2.mat: evaluation tile has no labels"):
        PotsdamDataset(root, "eval")


def test_a_missing_split_list_is_named(tmp_path: Path) -> None:
    root = make_potsdam(tmp_path / "p", tiles=2)
    (root / "labelled_test.txt").unlink()
    with pytest.raises(UserError, match=r"labelled_test\.txt is missing"):
        PotsdamDataset(root, "eval")
