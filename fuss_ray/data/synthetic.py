"""Seeded scenes of real texture photos with exact masks.

Flat-coloured regions would let any backbone, even a random one, separate the classes by
colour alone; real texture photos make the segmentation depend on what the features
capture, which is what a federated USS simulation is meant to study. The photos are the
ones scikit-image ships, so no download is needed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydantic import Field, field_validator

from fuss_ray.config import DataParams, RunConfig
from fuss_ray.data.base import SegmentationDataset, data_settings, digest, register_dataset
from fuss_ray.errors import UserError
from fuss_ray.seeds import Stream

# One real photo per semantic class, in a fixed order (class k uses TEXTURES[k]).
TEXTURES: tuple[str, ...] = (
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "coffee",
    "chelsea",
    "rocket",
    "astronaut",
    "moon",
    "coins",
    "camera",
    "retina",
    "cell",
    "page",
)


@lru_cache(maxsize=len(TEXTURES))
def _texture(name: str, side: int) -> NDArray[np.float32]:
    """The named photo as RGB float, scaled so that its shorter side is 1.5 x `side`."""
    import skimage.data

    raw = np.asarray(getattr(skimage.data, name)())
    if raw.dtype == bool:
        raw = raw.astype(np.uint8) * 255
    if raw.ndim == 2:
        raw = np.stack([raw] * 3, axis=-1)
    raw = raw[..., :3].astype(np.uint8)
    img = Image.fromarray(raw)
    scale = 1.5 * side / min(img.size)
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)))
    return np.asarray(img, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, side: int, cells: int) -> NDArray[np.float32]:
    """A low-frequency random field in [-1, 1], used to make region borders organic."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


class SyntheticParams(DataParams):
    """`data.dataset: synthetic`: how many scenes, of what size and variety."""

    num_images: int = Field(200, ge=1, le=1_000_000, description="training images")
    num_eval_images: int = Field(40, ge=1, le=100_000, description="test images")
    image_size: int = Field(224, ge=32, le=4096, description="generated side length")
    regions: tuple[int, int] = Field((3, 7), description="min and max regions of a scene")
    seed: int | None = Field(
        None,
        ge=0,
        description="the scenes' own seed, so a benchmark can keep one dataset while runs "
        "vary their seed (default: the run's seed)",
    )
    domains: int = Field(3, ge=1, le=1000, description="appearance domains")

    @field_validator("regions")
    @classmethod
    def _regions_ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1] <= 64:
            raise ValueError("must be [min, max] with 1 <= min <= max <= 64")
        return v


@register_dataset
class SyntheticScenes(SegmentationDataset):
    """A deterministic set of texture mosaics; image i depends only on (seed, split, i)."""

    dataset = "synthetic"
    Params = SyntheticParams

    @classmethod
    def open_splits(cls, config: RunConfig) -> tuple[SyntheticScenes, SyntheticScenes]:
        """Training and test scenes from the scenes' own seed (default: the run's)."""
        d = data_settings(config, SyntheticParams)
        seed = config.seed if d.seed is None else d.seed
        return cls(d, seed, split="train"), cls(d, seed, split="eval")

    def __init__(self, config: SyntheticParams, seed: int, split: str = "train") -> None:
        if config.num_classes > len(TEXTURES):
            raise UserError(
                f"data.num_classes: the synthetic dataset has {len(TEXTURES)} textures, "
                f"got {config.num_classes}"
            )
        self.num_classes = config.num_classes
        self.size = config.image_size
        self.regions = config.regions
        self.domains = config.domains
        self.seed = seed
        self.split = split
        self.length = config.num_images if split == "train" else config.num_eval_images
        self._split_key = 0 if split == "train" else 1

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._split_key, index])

    def _layout(self, rng: np.random.Generator) -> tuple[NDArray[np.uint8], int]:
        s = self.size
        n = int(rng.integers(self.regions[0], self.regions[1] + 1))
        dominant = int(rng.integers(self.num_classes))
        others = rng.integers(self.num_classes, size=n)
        classes = np.where(rng.random(n) < 0.5, dominant, others)
        classes[0] = dominant
        centres = rng.uniform(0, s, size=(n, 2)).astype(np.float32)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        warp = 0.15 * s
        wy = yy + warp * _smooth_noise(rng, s, 4)
        wx = xx + warp * _smooth_noise(rng, s, 4)
        d = (wy[None] - centres[:, 0, None, None]) ** 2 + (
            wx[None] - centres[:, 1, None, None]
        ) ** 2
        mask = classes[np.argmin(d, axis=0)].astype(np.uint8)
        domain = int(rng.integers(self.domains))
        return mask, domain

    def mask(self, index: int) -> NDArray[np.uint8]:
        return self._layout(self._rng(index))[0]

    def group(self, index: int) -> str:
        return f"domain{self._layout(self._rng(index))[1]}"

    def image(self, index: int) -> NDArray[np.uint8]:
        rng = self._rng(index)
        mask, domain = self._layout(rng)
        s = self.size
        out = np.zeros((s, s, 3), dtype=np.float32)
        for c in np.unique(mask):
            tex = _texture(TEXTURES[int(c)], s)
            y0 = int(rng.integers(0, tex.shape[0] - s + 1))
            x0 = int(rng.integers(0, tex.shape[1] - s + 1))
            patch = tex[y0 : y0 + s, x0 : x0 + s]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            sel = mask == c
            out[sel] = patch[sel]
        # Each domain has its own lighting: a fixed gain and colour cast.
        drng = np.random.default_rng([self.seed, Stream.SCENE_DOMAIN, domain])
        gain = drng.uniform(0.75, 1.15)
        cast = drng.uniform(-18.0, 18.0, size=3).astype(np.float32)
        out = out * gain + cast + rng.normal(0.0, 4.0, size=out.shape).astype(np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)

    def image_id(self, index: int) -> str:
        return f"{self.split}-{index:06d}"

    def fingerprint(self) -> str:
        return digest(
            "synthetic-v1",
            self.seed,
            self.split,
            self.length,
            self.num_classes,
            self.size,
            self.regions,
            self.domains,
        )
