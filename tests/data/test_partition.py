import numpy as np
import pytest

from fuss_ray.config import PartitionConfig
from fuss_ray.data.partition import make_partition, write_manifest
from fuss_ray.errors import UserError


def _hist(n: int = 60, classes: int = 4) -> np.ndarray:
    h = np.ones((n, classes), dtype=np.int64)
    h[np.arange(n), np.arange(n) % classes] = 10  # dominant class cycles
    return h


def _check_cover(clients: list[np.ndarray], n: int) -> None:
    flat = np.concatenate(clients)
    assert sorted(flat.tolist()) == list(range(n))  # disjoint and complete


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "pathological", "quantity"])
def test_cover_and_determinism(kind: str) -> None:
    cfg = PartitionConfig(kind=kind, num_clients=5, alpha=0.5, min_images=2)
    a = make_partition(cfg, _hist(), [""] * 60, seed=3)
    b = make_partition(cfg, _hist(), [""] * 60, seed=3)
    _check_cover(a.clients, 60)
    assert all(np.array_equal(x, y) for x, y in zip(a.clients, b.clients, strict=True))
    assert min(a.sizes()) >= 2


def test_dirichlet_small_alpha_is_skewed() -> None:
    hist = _hist(400)
    dom = hist.argmax(1)
    p = make_partition(PartitionConfig(num_clients=8, alpha=0.1, min_images=2), hist, [""] * 400, 0)
    # Under alpha = 0.1 most clients are dominated by one class.
    shares = [np.bincount(dom[c], minlength=4).max() / len(c) for c in p.clients]
    assert np.median(shares) > 0.6
    iid = make_partition(PartitionConfig(kind="iid", num_clients=8), hist, [""] * 400, 0)
    assert np.median([np.bincount(dom[c], minlength=4).max() / len(c) for c in iid.clients]) < 0.5


def test_pathological_limits_classes() -> None:
    hist = _hist(80)
    p = make_partition(
        PartitionConfig(kind="pathological", num_clients=4, classes_per_client=2),
        hist,
        [""] * 80,
        0,
    )
    dom = hist.argmax(1)
    assert all(len(set(dom[c].tolist())) <= 2 for c in p.clients)


def test_natural_keeps_groups_whole() -> None:
    groups = [f"city{i % 6}" for i in range(60)]
    p = make_partition(PartitionConfig(kind="natural", num_clients=3), _hist(), groups, 0)
    for c in p.clients:
        assert len({groups[i] for i in c}) == 2
    with pytest.raises(UserError, match="natural groups"):
        make_partition(PartitionConfig(kind="natural", num_clients=7), _hist(), groups, 0)


def test_more_clients_than_images() -> None:
    with pytest.raises(UserError, match=r"partition\.num_clients"):
        make_partition(PartitionConfig(num_clients=61), _hist(), [""] * 60, 0)


def test_infeasible_minimum_is_a_user_error() -> None:
    with pytest.raises(UserError, match="min_images"):
        make_partition(
            PartitionConfig(num_clients=10, alpha=0.01, min_images=6), _hist(), [""] * 60, 0
        )


def test_manifest_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    hist = _hist(12, 3)
    p = make_partition(PartitionConfig(kind="iid", num_clients=3), hist, [""] * 12, 0)
    write_manifest(tmp_path / "m.parquet", p, [f"img{i}" for i in range(12)], hist)
    t = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert len(t) == 12
    assert set(t[0]) == {"client_id", "image_id", "dominant_class", "pixels_per_class"}
    row = next(r for r in t if r["image_id"] == "img4")
    assert row["dominant_class"] == 1 and row["pixels_per_class"] == hist[4].tolist()
