"""Flip test-time augmentation and the dense CRF, on hand-built tiny feature stores."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fuss_ray.features.cache import FeatureStore
from fuss_ray.metrics.crf import crf_available, dense_crf
from fuss_ray.metrics.evaluate import evaluate_state, evaluate_variants
from fuss_ray.models.head import FussModel, model_state


def _store(features: np.ndarray, labels: np.ndarray, flipped: np.ndarray) -> FeatureStore:
    n, d, h, w = features.shape
    meta = {"num_images": n, "feature_shape": [d, h, w], "label_size": labels.shape[-1]}
    return FeatureStore(Path("mem"), [features], [labels], meta, [flipped], None)


def _model() -> FussModel:
    torch.manual_seed(0)
    return FussModel(in_dim=4, code_dim=3, num_centroids=2, dropout=0.0)


def test_flip_with_exact_mirror_features_changes_nothing() -> None:
    # The head is 1x1 convolutions, so code(mirror(f)) mirrored back is code(f) exactly.
    rng = np.random.default_rng(0)
    f = rng.normal(size=(3, 4, 5, 5)).astype(np.float32)
    labels = rng.integers(0, 2, size=(3, 5, 5)).astype(np.uint8)
    model = _model()
    store = _store(f, labels, np.ascontiguousarray(f[..., ::-1]))
    plain = evaluate_state(model, model_state(model), store, 2)
    flipped = evaluate_state(model, model_state(model), store, 2, flip=True)
    assert flipped["confusion"] == plain["confusion"]


def test_flip_averages_the_two_codes() -> None:
    # Mirror features that are the negation give codes whose average is the bias alone:
    # every pixel then gets the cluster the bias points to.
    rng = np.random.default_rng(1)
    f = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    labels = np.zeros((2, 3, 3), dtype=np.uint8)
    model = _model()
    with torch.no_grad():
        for conv in (model.head.linear, model.head.nonlinear[0], model.head.nonlinear[2]):
            conv.bias.zero_()
        model.head.nonlinear[2].weight.zero_()  # linear branch only: code is odd in f
    store = _store(f, labels, np.ascontiguousarray(-f[..., ::-1]))
    s = evaluate_state(model, model_state(model), store, 2, flip=True)
    # A zero code has cosine 0 with both centroids: argmax picks cluster 0 everywhere.
    assert np.asarray(s["confusion"])[:, 1].sum() == 0


@pytest.mark.skipif(not crf_available(), reason="pydensecrf2 is an optional extra")
def test_crf_removes_a_lone_pixel_that_disagrees_with_its_colour_region() -> None:
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[:, 8:] = 255  # left half black, right half white
    scores = np.zeros((2, 16, 16), dtype=np.float32)
    scores[0, :, :8], scores[1, :, 8:] = 1.0, 1.0
    scores[:, 4, 3] = [0.0, 0.6]  # one noisy pixel in the black half
    refined = dense_crf(image, scores, iterations=10).argmax(axis=0)
    expected = np.zeros((16, 16), dtype=np.int64)
    expected[:, 8:] = 1
    np.testing.assert_array_equal(refined, expected)
    assert scores.argmax(axis=0)[4, 3] == 1  # it was wrong before


def test_variants_report_only_the_enabled_options() -> None:
    rng = np.random.default_rng(2)
    f = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    store = _store(f, np.zeros((2, 3, 3), dtype=np.uint8), np.ascontiguousarray(f[..., ::-1]))
    model = _model()
    out = evaluate_variants(model, model_state(model), store, 2, flip=True, crf_iterations=None)
    assert sorted(out) == ["flip", "plain"]
    assert out["flip"] == out["plain"]
