"""Scoring a model on the cached evaluation set with the USS protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fuss_ray.features.cache import FeatureStore
from fuss_ray.metrics.segmentation import ConfusionAccumulator, unsupervised_scores
from fuss_ray.models.head import FussModel, ModelState, load_model_state

VARIANTS = ("plain", "flip", "crf", "flip+crf")


@torch.no_grad()
def evaluate_state(
    model: FussModel,
    state: ModelState,
    store: FeatureStore,
    num_classes: int,
    batch_size: int = 16,
    flip: bool = False,
    crf_iterations: int | None = None,
) -> dict[str, Any]:
    """Predict every evaluation image, accumulate one confusion matrix, match once.

    `flip` averages each image's codes with its mirror's (mirrored back), STEGO's test-time
    augmentation; `crf_iterations` refines each cluster map with a dense CRF on the pixels.
    """
    from fuss_ray.metrics.crf import dense_crf

    load_model_state(model, state)
    model.eval()
    device = model.centroids.device  # features go where the model is; predictions come back
    acc = ConfusionAccumulator(num_classes, model.centroids.shape[0])
    side = int(store.meta["label_size"])
    n = len(store)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        code = model.code(torch.from_numpy(store.gather(idx)).to(device), size=side)
        if flip:
            flipped = torch.from_numpy(store.gather_flipped(idx)).to(device)
            code = (code + model.code(flipped, size=side).flip(-1)) / 2
        scores = model.similarity(code)
        if crf_iterations is None:
            pred = scores.argmax(dim=1).cpu().numpy()
        else:
            images = store.gather_images(idx)
            probs = scores.cpu().numpy()
            pred = np.stack(
                [
                    dense_crf(images[j], probs[j], crf_iterations).argmax(axis=0)
                    for j in range(len(idx))
                ]
            )
        acc.update(pred, store.gather_labels(idx))
    result = unsupervised_scores(acc.matrix)
    result["confusion"] = acc.matrix.tolist()
    return result


def evaluate_variants(
    model: FussModel,
    state: ModelState,
    store: FeatureStore,
    num_classes: int,
    flip: bool,
    crf_iterations: int | None,
) -> dict[str, dict[str, float]]:
    """mIoU and pixel accuracy with and without each enabled test-time option."""
    wanted = {
        "plain": True,
        "flip": flip,
        "crf": crf_iterations is not None,
        "flip+crf": flip and crf_iterations is not None,
    }
    out: dict[str, dict[str, float]] = {}
    for name in VARIANTS:
        if not wanted[name]:
            continue
        s = evaluate_state(
            model,
            state,
            store,
            num_classes,
            flip="flip" in name,
            crf_iterations=crf_iterations if "crf" in name else None,
        )
        out[name] = {"miou": float(s["miou"]), "pixel_acc": float(s["pixel_acc"])}
    return out
