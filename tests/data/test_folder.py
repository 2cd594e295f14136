from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fuss_ray.data.folder import FolderDataset, inspect_image
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


def _break(tree: Path) -> tuple[Path, Path]:
    """Cut one JPEG in half and replace one mask with bytes that are no image at all."""
    cut = tree / "images" / "a" / "2.jpg"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    junk = tree / "masks" / "b" / "3.png"
    junk.write_bytes(b"not a png")
    return cut, junk


def test_corrupt_files_are_skipped_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut, junk = _break(make_tree(tmp_path))
    ds = FolderDataset(tmp_path, 3)
    assert len(ds) == 4
    assert {ds.image_id(i) for i in range(4)} == {"a/0", "b/1", "a/4", "b/5"}
    assert ds.skipped[0].startswith(f"{cut}: corrupt or truncated")
    assert ds.skipped[1] == f"{junk}: not an image file"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 2 unreadable image pair(s)" in err[0]
    train, ev = ds.split(0.25, seed=0)
    assert train.skipped == ds.skipped and ev.skipped == []


def test_corrupt_file_is_an_error_when_strict(tmp_path: Path) -> None:
    cut, _ = _break(make_tree(tmp_path))
    with pytest.raises(UserError, match=rf"^{cut}: corrupt or truncated .*data\.strict is on"):
        FolderDataset(tmp_path, 3, strict=True)


def test_intact_png_and_jpeg_pass_the_cheap_checks(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, n=2)
    for path in [*(tree / "images").rglob("*.jpg"), *(tree / "masks").rglob("*.png")]:
        assert inspect_image(path) == ((30, 20), None)
    padded = tree / "images" / "a" / "0.jpg"  # some cameras pad after the end marker
    padded.write_bytes(padded.read_bytes() + b"\x00" * 64)
    assert inspect_image(padded) == ((30, 20), None)
