import numpy as np
from numpy.typing import NDArray

from fuss_ray.data.base import SegmentationDataset
from fuss_ray.data.transforms import FiveCrops, five_crop_box


class TinyDataset(SegmentationDataset):
    """Two 6 x 10 images whose pixels hold their own coordinates."""

    num_classes = 60

    def __len__(self) -> int:
        return 2

    def image(self, index: int) -> NDArray[np.uint8]:
        grid = np.arange(60, dtype=np.uint8).reshape(6, 10) + index
        return np.repeat(grid[..., None], 3, axis=2)

    def mask(self, index: int) -> NDArray[np.uint8]:
        return np.arange(60, dtype=np.uint8).reshape(6, 10)

    def image_id(self, index: int) -> str:
        return f"img{index}"

    def group(self, index: int) -> str:
        return f"g{index}"

    def fingerprint(self) -> str:
        return "tiny"


def test_five_crop_boxes_are_the_corners_and_centre_at_half_size() -> None:
    boxes = [five_crop_box(6, 10, k) for k in range(5)]
    assert boxes == [(0, 0, 3, 5), (0, 5, 3, 5), (3, 0, 3, 5), (3, 5, 3, 5), (1, 2, 3, 5)]


def test_crops_cut_image_and_mask_alike_and_keep_the_group() -> None:
    base = TinyDataset()
    crops = FiveCrops(base)
    assert len(crops) == 5 * len(base)
    img, mask = base.image(1), base.mask(1)
    h, w = mask.shape
    np.testing.assert_array_equal(crops.image(5 + 3), img[h - h // 2 :, w - w // 2 :])
    np.testing.assert_array_equal(crops.mask(5 + 3), mask[h - h // 2 :, w - w // 2 :])
    assert crops.group(7) == base.group(1)
    assert crops.image_id(9) == f"{base.image_id(1)}#c"
    assert crops.fingerprint() != base.fingerprint()


def test_the_five_crops_of_an_image_decode_it_once() -> None:
    class Counting(TinyDataset):
        reads = 0

        def image(self, index: int) -> NDArray[np.uint8]:
            Counting.reads += 1
            return super().image(index)

    crops = FiveCrops(Counting())
    for i in range(10):
        crops.image(i)
    assert Counting.reads == 2
