"""Online extraction: actors compute training features themselves, round by round."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fuss_ray.config import validate_config
from fuss_ray.data.splits import build_datasets
from fuss_ray.features.cache import FeatureStore, ensure_features
from fuss_ray.features.online import OnlineFeatures, online_descriptor
from fuss_ray.simulation import run_simulation
from tests.conftest import tiny_config_dict


def test_online_features_match_the_cache(cache_dir: Path) -> None:
    config = validate_config(tiny_config_dict(cache_dir))
    train = build_datasets(config).train
    cached = ensure_features(config.features, train, "train", show_progress=False)
    descriptor = FeatureStore.open(online_descriptor(config.features, train))
    assert descriptor.meta["feature_shape"] == cached.meta["feature_shape"]
    assert len(descriptor) == len(cached) and descriptor.feature_dim == cached.feature_dim
    online = OnlineFeatures(config, descriptor.meta, torch.device("cpu"))
    idx = [3, 0, 17, 9]
    # Same images, other batches and thread counts: equal up to float rounding.
    np.testing.assert_allclose(online.gather(idx), cached.gather(idx), rtol=1e-4, atol=1e-4)


def test_a_round_extracts_each_image_of_its_clients_once(cache_dir: Path) -> None:
    config = validate_config(tiny_config_dict(cache_dir, **{"features.batch_size": 5}))
    train = build_datasets(config).train
    descriptor = FeatureStore.open(online_descriptor(config.features, train))
    online = OnlineFeatures(config, descriptor.meta, torch.device("cpu"))
    with online.hold([4, 2, 4, 7, 1, 2]):
        assert online.extracted == 4  # unique images, one batched pass
        online.gather([7, 4, 1])
        assert online.extracted == 4  # served from the round's hold
    assert online.held == {}
    online.gather([7])
    assert online.extracted == 5  # outside a round: extracted on demand, not kept


def test_an_online_run_trains_like_a_cached_one(cache_dir: Path, tmp_path: Path) -> None:
    cached = run_simulation(
        validate_config(tiny_config_dict(cache_dir, tracking=False)),
        tmp_path / "cache",
        show_progress=False,
    )
    online = run_simulation(
        validate_config(tiny_config_dict(cache_dir, tracking=False, **{"features.mode": "online"})),
        tmp_path / "online",
        show_progress=False,
    )
    assert online["client_sizes"] == cached["client_sizes"]
    assert len(online["rounds"]) == 2
    assert online["final"]["miou"] == pytest.approx(cached["final"]["miou"], abs=1.0)


@pytest.mark.ray
def test_ray_actors_extract_online_with_their_own_backbone(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    overrides = {
        "features.mode": "online",
        "federation.executor": "ray",
        "federation.num_cpus": 0.5,
        "train.rounds": 1,
    }
    cfg = validate_config(tiny_config_dict(cache_dir, tracking=False, **overrides))
    summary = run_simulation(cfg, tmp_path, show_progress=False)
    assert summary["feature_transport"] == "path"
    assert [a["clients"] for a in summary["actors"]] == [2, 2]  # 4 clients, 2 per actor
    assert summary["rounds"][0]["num_sampled"] == 4
