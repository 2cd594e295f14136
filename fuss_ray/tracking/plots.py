"""PNG figures a person reads faster than tables: convergence and segment overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fuss_ray.io import atomic_path

PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [220, 190, 255],
        [170, 110, 40],
        [255, 250, 200],
        [128, 0, 0],
    ],
    dtype=np.uint8,
)


def save_png(fig: Any, path: Path, dpi: int | None = None, layout: bool = True) -> None:
    """Lay out (unless the caller did), write atomically (never a half-written PNG) and
    free a matplotlib figure."""
    import matplotlib.pyplot as plt

    if layout:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def colourise(labels: NDArray[np.integer[Any]]) -> NDArray[np.uint8]:
    """Class ids to colours; ignored or unmatched pixels (>= palette size) are black."""
    lab = np.asarray(labels, dtype=np.int64)
    out = np.zeros((*lab.shape, 3), dtype=np.uint8)
    ok = (lab >= 0) & (lab < 255)
    out[ok] = PALETTE[lab[ok] % len(PALETTE)]
    return out


def convergence_plot(
    rounds: list[dict[str, Any]], title: str, path: Path, random_miou: float | None = None
) -> None:
    """mIoU and pixel accuracy per round, with the random-assignment floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [r["miou"] for r in rounds], marker="o", label="mIoU")
    ax.plot(xs, [r["pixel_acc"] for r in rounds], marker="s", label="pixel accuracy")
    if random_miou is not None:
        ax.axhline(random_miou, color="grey", linestyle="--", label="random assignment mIoU")
    ax.set_xlabel("round")
    ax.set_ylabel("score (x100)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_png(fig, path)


def overlay_grid(
    images: list[NDArray[np.uint8]],
    truths: list[NDArray[np.uint8]],
    preds: list[NDArray[np.integer[Any]]],
    path: Path,
) -> None:
    """One row per image: photo, ground truth, matched prediction, prediction over photo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.6 * n), dpi=90, squeeze=False)
    titles = ("image", "ground truth", "prediction (matched)", "overlay")
    for i in range(n):
        pred_rgb = colourise(preds[i])
        blend = (0.55 * images[i] + 0.45 * pred_rgb).astype(np.uint8)
        for j, panel in enumerate((images[i], colourise(truths[i]), pred_rgb, blend)):
            axes[i, j].imshow(panel)
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(titles[j])
    save_png(fig, path)
