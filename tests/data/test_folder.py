from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fuss_ray.data.folder import FolderDataset
from fuss_ray.errors import UserError


def make_tree(root: Path, n: int = 6, groups: tuple[str, ...] = ("a", "b")) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        g = groups[i % len(groups)]
        (root / "images" / g).mkdir(parents=True, exist_ok=True)
        (root / "masks" / g).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
            root / "images" / g / f"{i}.jpg"
        )
        mask = rng.integers(0, 3, (20, 30)).astype(np.uint8)
        mask[0, 0] = 255
        Image.fromarray(mask).save(root / "masks" / g / f"{i}.png")
    return root


def test_reads_pairs_groups_and_split(tmp_path: Path) -> None:
    ds = FolderDataset(make_tree(tmp_path), 3)
    assert len(ds) == 6
    assert ds.image(0).shape == (20, 30, 3)
    assert ds.mask(0)[0, 0] == 255
    assert {ds.group(i) for i in range(6)} == {"a", "b"}
    train, ev = ds.split(0.34, seed=0)
    assert len(train) + len(ev) == 6 and len(ev) == 2
    assert {train.image_id(i) for i in range(len(train))}.isdisjoint(
        {ev.image_id(i) for i in range(len(ev))}
    )


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        FolderDataset(tmp_path / "nope", 3)


def test_image_without_mask(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    (root / "masks" / "a" / "0.png").unlink()
    with pytest.raises(UserError, match=r"0\.jpg: no mask"):
        FolderDataset(root, 3)


def test_size_mismatch(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "b" / "1.png")
    with pytest.raises(UserError, match="differs from its image"):
        FolderDataset(root, 3)


def test_label_out_of_range(tmp_path: Path) -> None:
    ds = FolderDataset(make_tree(tmp_path), 2)
    with pytest.raises(UserError, match=r"data\.num_classes"):
        for i in range(len(ds)):
            ds.mask(i)
