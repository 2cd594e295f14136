import numpy as np

from fuss_ray.features.knn import image_descriptors, mine_knn


def test_neighbours_by_cosine_excluding_self() -> None:
    d = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    knn = mine_knn(d, 1)
    assert knn[:, 0].tolist() == [1, 0, 3, 2]
    assert mine_knn(d, 10).shape == (4, 3)  # k capped at n - 1
    assert mine_knn(d[:1], 2).tolist() == [[0]]  # alone: itself


def test_image_descriptors_are_unit_norm() -> None:
    f = np.random.default_rng(0).normal(size=(3, 5, 4, 4)).astype(np.float32)
    p = image_descriptors(f)
    assert np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-6)
    assert np.allclose(p[0], f[0].mean((1, 2)) / np.linalg.norm(f[0].mean((1, 2))), atol=1e-6)
