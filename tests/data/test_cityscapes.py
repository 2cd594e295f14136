from pathlib import Path

import numpy as np
import pytest

from fuss_ray.config import PartitionConfig
from fuss_ray.data.cityscapes import TRAIN_CITIES, CityscapesDataset
from fuss_ray.data.partition import make_partition
from fuss_ray.errors import UserError
from tests.data.fake_trees import CITYSCAPES_BANDS, banded, make_cityscapes


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"))


def test_label_ids_7_to_33_become_0_to_26_and_the_rest_is_ignored(tree: Path) -> None:
    ds = CityscapesDataset(tree, "train")
    expected = banded(list(CITYSCAPES_BANDS.values()), 48, 96)
    np.testing.assert_array_equal(ds.mask(0), expected)
    assert set(np.unique(ds.mask(0)).tolist()) == {0, 19, 26, 255}
    assert ds.num_classes == 27


def test_images_are_grouped_by_city_in_both_splits(tree: Path) -> None:
    train, val = CityscapesDataset(tree, "train"), CityscapesDataset(tree, "val")
    assert len(train) == 36 and len(val) == 4
    assert sorted({train.group(i) for i in range(len(train))}) == list(TRAIN_CITIES)
    assert train.image_id(0) == "train/aachen/aachen_000000_000000"
    assert train.image(0).shape == (48, 96, 3)
    assert train.fingerprint() != val.fingerprint()


@pytest.mark.parametrize("clients", [3, 6, 18])
def test_natural_partition_gives_each_client_an_equal_share_of_cities(
    tree: Path, clients: int
) -> None:
    ds = CityscapesDataset(tree, "train")
    groups = [ds.group(i) for i in range(len(ds))]
    hist = np.ones((len(ds), 27), dtype=np.int64)
    part = make_partition(PartitionConfig(kind="natural", num_clients=clients), hist, groups, 0)
    cities = [sorted({groups[i] for i in c}) for c in part.clients]
    assert all(len(c) == 18 // clients for c in cities)
    # The documented order: alphabetical city i goes to client i mod K.
    assert cities[0] == [TRAIN_CITIES[i] for i in range(0, 18, clients)]
    assert sorted(c for cs in cities for c in cs) == list(TRAIN_CITIES)


def test_a_missing_label_file_is_named(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "c", cities=("aachen",), per_city=1)
    label = root / "gtFine/train/aachen/aachen_000000_000000_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(UserError, match=r"no label file at .*aachen_000000_000000_gtFine_labelIds"):
        CityscapesDataset(root, "train")


def test_a_missing_split_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match=r"gtFine/train is missing"):
        CityscapesDataset(tmp_path, "train")
