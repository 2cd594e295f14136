"""Scoring a model on the cached evaluation set with the USS protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fuss_ray.features.cache import FeatureStore
from fuss_ray.metrics.segmentation import ConfusionAccumulator, unsupervised_scores
from fuss_ray.models.head import FussModel, ModelState, load_model_state


@torch.no_grad()
def evaluate_state(
    model: FussModel,
    state: ModelState,
    store: FeatureStore,
    num_classes: int,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Predict every evaluation image, accumulate one confusion matrix, match once."""
    load_model_state(model, state)
    model.eval()
    acc = ConfusionAccumulator(num_classes, model.centroids.shape[0])
    side = int(store.meta["label_size"])
    n = len(store)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        pred = model.predict(torch.from_numpy(store.gather(idx)), size=side)
        acc.update(pred.numpy(), store.gather_labels(idx))
    scores = unsupervised_scores(acc.matrix)
    scores["confusion"] = acc.matrix.tolist()
    return scores
