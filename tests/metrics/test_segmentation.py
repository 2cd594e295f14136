import numpy as np
import pytest

from fuss_ray.metrics import confusion_matrix, random_assignment_scores, unsupervised_scores


def test_confusion_counts_and_ignores_255() -> None:
    pred = np.array([0, 0, 1, 1, 2, 2])
    target = np.array([1, 1, 0, 0, 2, 255])
    m = confusion_matrix(pred, target, 3)
    assert m.dtype == np.int64
    assert m.tolist() == [[0, 2, 0], [2, 0, 0], [0, 0, 1]]


def test_permuted_clusters_score_perfectly() -> None:
    m = confusion_matrix(np.array([0, 0, 1, 1, 2]), np.array([1, 1, 0, 0, 2]), 3)
    s = unsupervised_scores(m)
    assert s["miou"] == pytest.approx(100.0)
    assert s["pixel_acc"] == pytest.approx(100.0)
    assert s["mapping"] == {0: 1, 1: 0, 2: 2}


def test_hand_computed_iou() -> None:
    # M = [[2, 0], [1, 1]]: IoU0 = 2 / 3, IoU1 = 1 / 2, accuracy 3 / 4.
    m = confusion_matrix(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), 2)
    s = unsupervised_scores(m)
    assert s["iou"] == pytest.approx([200 / 3, 50.0])
    assert s["miou"] == pytest.approx((200 / 3 + 50.0) / 2)
    assert s["pixel_acc"] == pytest.approx(75.0)


def test_absent_but_predicted_class_counts_zero() -> None:
    # Class 0 only in the labels; one pixel predicted as cluster 2 -> a 0-IoU class.
    m = confusion_matrix(np.array([0, 2]), np.array([0, 0]), 3)
    s = unsupervised_scores(m)
    assert s["miou"] == pytest.approx(25.0)
    assert s["pixel_acc"] == pytest.approx(50.0)
    assert sum(np.isnan(s["iou"])) == 1


def test_counts_beyond_float32_precision_are_exact() -> None:
    big = 2**24 + 1
    m = np.array([[big, 0], [0, 1]], dtype=np.int64)
    s = unsupervised_scores(m)
    assert s["pixel_acc"] == pytest.approx(100.0)


def test_extra_clusters_count_as_errors() -> None:
    m = confusion_matrix(np.array([0, 1, 2]), np.array([0, 0, 0]), 1, num_clusters=3)
    s = unsupervised_scores(m)
    assert s["pixel_acc"] == pytest.approx(100 / 3)


def test_random_assignment_is_near_chance() -> None:
    target = np.repeat(np.arange(4), 2500)
    s = random_assignment_scores(target, 4, 4, seed=0)
    assert 10.0 < s["miou"] < 20.0


def test_rejects_out_of_range_prediction() -> None:
    with pytest.raises(ValueError):
        confusion_matrix(np.array([5]), np.array([0]), 2)
