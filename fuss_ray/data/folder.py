"""A user's own data: `images/` and `masks/` side by side, matched by relative path."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from fuss_ray.config import DataParams, RunConfig
from fuss_ray.data.base import (
    IGNORE_INDEX,
    RootedParams,
    SegmentationDataset,
    data_root,
    data_settings,
    digest,
    register_dataset,
)
from fuss_ray.errors import UserError
from fuss_ray.seeds import Stream, seed_stream

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _jpeg_complete(path: Path) -> bool:
    """A JPEG ends with its EOI marker (trailing padding aside); a cut-off one does not."""
    with path.open("rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 1024))
        tail = fh.read().rstrip(b"\x00\r\n ")
    return tail.endswith(b"\xff\xd9")


def inspect_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height), or a reason the file cannot be used (unreadable, truncated).

    Cheap where the format allows: PNG chunks are CRC-checked without decoding and a JPEG
    is decoded only when its end marker is missing; other formats are decoded in full.
    """
    try:
        with Image.open(path) as img:
            size, fmt = img.size, img.format
            if fmt == "PNG":
                img.verify()
                return size, None
        if fmt == "JPEG" and _jpeg_complete(path):
            return size, None
        with Image.open(path) as img:
            img.load()
        return size, None
    except UnidentifiedImageError:
        return None, "not an image file"
    except Exception as exc:  # Pillow raises OSError, SyntaxError, EOFError, ValueError...
        detail = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        return None, f"corrupt or truncated ({detail})"


class FileTreeParams(RootedParams):
    """A dataset of image and mask files under `root`."""

    strict: bool = Field(False, description="a corrupt image is an error instead of a counted skip")


class FolderParams(FileTreeParams):
    """`data.dataset: folder`."""

    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="the test split's share")


@register_dataset
class FolderDataset(SegmentationDataset):
    """`root/images/[GROUP/]NAME.ext` with `root/masks/[GROUP/]NAME.png` label maps.

    A mask holds class ids 0..num_classes-1 and 255 for pixels to ignore. The first
    sub-folder under images/, if any, is the image's natural group (a city, a site).
    Every pairing and size is checked up front, so a bad dataset fails before anything is
    trained or written. A corrupt or truncated file is skipped with a counted warning (the
    pair leaves the dataset), or is an error naming it when `strict`.
    """

    dataset = "folder"
    Params: ClassVar[type[DataParams]] = FolderParams

    @classmethod
    def open_splits(cls, config: RunConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
        """One folder, split by a seeded hold-out of `data.eval_fraction`."""
        d = data_settings(config, FolderParams)
        full = FolderDataset(data_root(config), d.num_classes, strict=d.strict)
        return full.split(d.eval_fraction, config.seed)

    kind = "folder-v1"  # names the layout in the fingerprint (and so in the cache key)

    def __init__(
        self,
        root: Path,
        num_classes: int,
        entries: list[tuple[Path, Path, str]] | None = None,
        strict: bool = False,
    ) -> None:
        self.root = root
        self.num_classes = num_classes
        self.strict = strict
        self.skipped: list[str] = []  # "path: reason" of every pair left out
        self.entries = entries if entries is not None else self._scan(root)

    def _usable(self, img: Path, mask: Path) -> bool:
        sizes = []
        for path in (img, mask):
            size, problem = inspect_image(path)
            if problem is not None:
                if self.strict:
                    raise UserError(f"{path}: {problem} (data.strict is on)")
                self.skipped.append(f"{path}: {problem}")
                return False
            sizes.append(size)
        if sizes[0] != sizes[1]:
            raise UserError(f"{mask}: size {sizes[1]} differs from its image {img} {sizes[0]}")
        return True

    def _scan(self, root: Path) -> list[tuple[Path, Path, str]]:
        images_dir, masks_dir = root / "images", root / "masks"
        if not root.is_dir():
            raise UserError(f"data.root: {root} does not exist")
        for d in (images_dir, masks_dir):
            if not d.is_dir():
                raise UserError(f"data.root: {d} is missing (expected images/ and masks/)")
        images = sorted(
            p for p in images_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            raise UserError(f"{images_dir}: no images found")
        entries = []
        for img in images:
            rel = img.relative_to(images_dir)
            mask = masks_dir / rel.with_suffix(".png")
            if not mask.is_file():
                raise UserError(f"{img}: no mask at {mask}")
            if not self._usable(img, mask):
                continue
            group = rel.parts[0] if len(rel.parts) > 1 else ""
            entries.append((img, mask, group))
        if self.skipped:
            log.warning(
                "skipped %d unreadable image pair(s) under %s (first: %s); set data.strict: "
                "true to stop instead",
                len(self.skipped),
                root,
                self.skipped[0],
            )
        if not entries:
            raise UserError(f"{images_dir}: no readable images found")
        return entries

    def split(self, eval_fraction: float, seed: int) -> tuple[FolderDataset, FolderDataset]:
        """A seeded hold-out split; the evaluation part is never trained on."""
        n = len(self.entries)
        n_eval = max(1, round(n * eval_fraction))
        if n - n_eval < 1:
            raise UserError(f"{self.root}: {n} images are too few to hold out an evaluation set")
        order = np.random.default_rng(seed_stream(Stream.FOLDER_SPLIT, seed)).permutation(n)
        held = set(order[:n_eval].tolist())
        train = [e for i, e in enumerate(self.entries) if i not in held]
        evaluation = [e for i, e in enumerate(self.entries) if i in held]
        parts = (
            FolderDataset(self.root, self.num_classes, train, self.strict),
            FolderDataset(self.root, self.num_classes, evaluation, self.strict),
        )
        parts[0].skipped = self.skipped  # reported once, with the training split
        return parts

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, index: int) -> NDArray[np.uint8]:
        path = self.entries[index][0]
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError):
            raise UserError(f"{path}: not a readable image") from None

    def mask(self, index: int) -> NDArray[np.uint8]:
        path = self.entries[index][1]
        try:
            with Image.open(path) as img:
                arr = np.asarray(img)
        except (UnidentifiedImageError, OSError):
            raise UserError(f"{path}: not a readable mask") from None
        if arr.ndim != 2:
            raise UserError(f"{path}: a mask must be a single-channel label map")
        return self.map_labels(arr, path)

    def map_labels(self, arr: NDArray[Any], path: Path) -> NDArray[np.uint8]:
        """Stored label values to training ids (identity here; adapters map official ids)."""
        bad = (arr >= self.num_classes) & (arr != IGNORE_INDEX)
        if bad.any():
            raise UserError(
                f"{path}: label {int(arr[bad].max())} is outside 0..{self.num_classes - 1} "
                f"(data.num_classes) and is not the ignore index {IGNORE_INDEX}"
            )
        return arr.astype(np.uint8)

    def image_id(self, index: int) -> str:
        return str(self.entries[index][0].relative_to(self.root / "images").with_suffix(""))

    def group(self, index: int) -> str:
        return self.entries[index][2]

    def fingerprint(self) -> str:
        stats = [
            (
                str(i.relative_to(self.root)),
                i.stat().st_size,
                i.stat().st_mtime_ns,
                m.stat().st_size,
                m.stat().st_mtime_ns,
            )
            for i, m, _ in self.entries
        ]
        return digest(self.kind, str(self.root.resolve()), self.num_classes, stats)
