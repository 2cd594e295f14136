"""mIoU and pixel accuracy for cluster predictions, following the USS protocol.

The protocol accumulates one int64 confusion matrix over the whole evaluation set and
matches clusters to classes once on it. Per-batch matchings, float histograms and averaged
per-image IoUs are the known ways public code inflates or corrupts these numbers, so each is
ruled out here by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def confusion_matrix(
    pred: NDArray[np.integer[Any]],
    target: NDArray[np.integer[Any]],
    num_classes: int,
    num_clusters: int | None = None,
) -> NDArray[np.int64]:
    """Count (true class, predicted cluster) pairs; rows are classes, columns clusters.

    Target pixels outside [0, num_classes) are ignored (the ignore index, 255, among them),
    and so their predictions are not counted anywhere.
    """
    clusters = num_classes if num_clusters is None else num_clusters
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    t = np.asarray(target).reshape(-1).astype(np.int64)
    if p.shape != t.shape:
        raise ValueError(f"pred has {p.size} pixels but target has {t.size}")
    keep = (t >= 0) & (t < num_classes)
    p, t = p[keep], t[keep]
    if p.size and (p.min() < 0 or p.max() >= clusters):
        raise ValueError(f"predicted cluster ids must lie in [0, {clusters})")
    flat = np.bincount(t * clusters + p, minlength=num_classes * clusters)
    return flat.astype(np.int64).reshape(num_classes, clusters)


class ConfusionAccumulator:
    """Sums confusion matrices across batches so that matching happens once at the end."""

    def __init__(self, num_classes: int, num_clusters: int | None = None) -> None:
        self.num_classes = num_classes
        self.num_clusters = num_classes if num_clusters is None else num_clusters
        self.matrix = np.zeros((num_classes, self.num_clusters), dtype=np.int64)

    def update(self, pred: NDArray[np.integer[Any]], target: NDArray[np.integer[Any]]) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.num_clusters)


def unsupervised_scores(confusion: NDArray[np.integer[Any]]) -> dict[str, Any]:
    """Hungarian-match clusters to classes and score the matched prediction.

    Returns `miou` and `pixel_acc` (x100, floats), `iou` (per class, NaN where undefined)
    and `mapping` (cluster id to class id; clusters left unmatched map to nothing and their
    pixels count as errors).
    """
    m = np.asarray(confusion, dtype=np.int64)
    if m.ndim != 2:
        raise ValueError("confusion must be a 2-D (classes x clusters) matrix")
    num_classes, _ = m.shape
    # Imported here: scipy.optimize costs every process that imports this module (each
    # host and server actor, each command) about half a second of a core at start.
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(m, maximize=True)
    mapping = {int(c): int(r) for r, c in zip(rows, cols, strict=True)}
    class_to_cluster = {r: c for c, r in mapping.items()}
    row_sum = m.sum(axis=1)
    col_sum = m.sum(axis=0)
    total = int(m.sum())
    iou = np.full(num_classes, np.nan, dtype=np.float64)
    tp_total = 0
    for k in range(num_classes):
        if k in class_to_cluster:
            c = class_to_cluster[k]
            tp = int(m[k, c])
            fp = int(col_sum[c]) - tp
        else:
            tp, fp = 0, 0
        fn = int(row_sum[k]) - tp
        tp_total += tp
        if tp + fp + fn > 0:
            iou[k] = tp / (tp + fp + fn)
    defined = iou[~np.isnan(iou)]
    miou = float(defined.mean() * 100.0) if defined.size else float("nan")
    pixel_acc = float(tp_total / total * 100.0) if total else float("nan")
    return {"miou": miou, "pixel_acc": pixel_acc, "iou": (iou * 100.0).tolist(), "mapping": mapping}


def random_assignment_scores(
    target: NDArray[np.integer[Any]], num_classes: int, num_clusters: int, seed: int
) -> dict[str, Any]:
    """Scores of assigning every pixel a uniformly random cluster: the floor to beat."""
    rng = np.random.default_rng(seed)
    t = np.asarray(target)
    pred = np.asarray(rng.integers(0, num_clusters, size=t.shape), dtype=np.int64)
    return unsupervised_scores(confusion_matrix(pred, t, num_classes, num_clusters))
