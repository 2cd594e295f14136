from pathlib import Path

import numpy as np
import pytest

from fuss_ray.config import FeatureConfig
from fuss_ray.data.synthetic import SyntheticParams, SyntheticScenes
from fuss_ray.features.cache import FeatureStore, ensure_features, verify_store


def test_extract_once_then_reuse_and_key_on_settings(cache_dir: Path) -> None:
    ds = SyntheticScenes(SyntheticParams(num_images=5, num_classes=3, image_size=64), 11, "train")
    cfg = FeatureConfig(cache_dir=cache_dir, input_size=64, label_size=16, batch_size=2)
    store = ensure_features(cfg, ds, "train", show_progress=False)
    assert len(store) == 5 and store.gather([0, 4]).shape == (2, 152, 8, 8)
    assert store.gather_labels([1]).shape == (1, 16, 16)
    stamp = (store.path / "meta.json").stat().st_mtime_ns
    again = ensure_features(cfg, ds, "train", show_progress=False)
    assert again.path == store.path
    assert (store.path / "meta.json").stat().st_mtime_ns == stamp  # reused, not re-extracted
    assert np.array_equal(again.feature(3), store.feature(3))
    other = ensure_features(cfg.model_copy(update={"label_size": 8}), ds, "train", False)
    assert other.path != store.path
    ds2 = SyntheticScenes(SyntheticParams(num_images=5, num_classes=3, image_size=64), 12, "train")
    assert ensure_features(cfg, ds2, "train", False).path != store.path


def test_store_is_memory_mapped(cache_dir: Path) -> None:
    ds = SyntheticScenes(SyntheticParams(num_images=3, num_classes=3, image_size=64), 5, "eval")
    cfg = FeatureConfig(cache_dir=cache_dir, input_size=64, label_size=16)
    path = ensure_features(cfg, ds, "eval", show_progress=False).path
    store = FeatureStore.open(path)
    assert not store.features[0].flags.writeable  # a view on the mapped file, not a copy


def test_corrupt_shard_is_detected_and_extracted_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = SyntheticScenes(SyntheticParams(num_images=3, num_classes=3, image_size=64), 7, "train")
    cfg = FeatureConfig(cache_dir=tmp_path, input_size=64, label_size=16)
    store = ensure_features(cfg, ds, "train", show_progress=False)
    good = np.array(store.feature(2))
    shard = store.path / store.meta["shards"][0]
    assert verify_store(store.path) is None
    del store

    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte inside the features, size unchanged
    shard.write_bytes(bytes(blob))
    assert verify_store(shard.parent) == f"{shard.name} does not match its checksum"
    again = ensure_features(cfg, ds, "train", show_progress=False)
    assert np.array_equal(again.feature(2), good)  # re-extracted, not the tampered copy
    assert verify_store(again.path) is None
    assert "does not match its checksum; extracting it again" in capsys.readouterr().err

    shard.write_bytes(shard.read_bytes()[:1000])  # truncated by a full disk or a kill
    assert "bytes, " in (verify_store(shard.parent) or "")
    again = ensure_features(cfg, ds, "train", show_progress=False)
    assert np.array_equal(again.feature(2), good)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert left == [again.path.name, "weights"]  # no broken copy left behind


def test_a_float16_cache_is_half_the_size_and_reads_as_float32(cache_dir: Path) -> None:
    ds = SyntheticScenes(SyntheticParams(num_images=4, num_classes=3, image_size=64), 21, "train")
    wide = FeatureConfig(cache_dir=cache_dir, input_size=64, label_size=16)
    narrow = wide.model_copy(update={"dtype": "float16"})
    full = ensure_features(wide, ds, "train", show_progress=False)
    half = ensure_features(narrow, ds, "train", show_progress=False)
    assert half.path != full.path and half.meta["dtype"] == "float16"
    assert half.features[0].dtype == np.float16  # what is mapped from disk
    got = half.gather([0, 3])
    assert got.dtype == np.float32  # what clients compute with
    assert np.allclose(got, full.gather([0, 3]), rtol=2e-3, atol=2e-3)
    shard = half.meta["shards"][0]
    assert half.meta["sizes"][shard] < 0.6 * full.meta["sizes"][shard]
