"""Two runs that need the same feature cache, started together, extract it once."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from fuss_ray.features.cache import FeatureStore

from ..conftest import tiny_config_dict


def test_two_processes_extract_one_cache_once(tmp_path: Path) -> None:
    # Enough images that one extraction takes seconds, so the two surely overlap.
    tree = tiny_config_dict(
        tmp_path / "cache",
        **{"data.num_images": 256, "data.image_size": 128, "features.input_size": 128},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    cmd = [sys.executable, "-m", "fuss_ray.cli.main", "extract", str(path), "--quiet"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    lines = [line for out, _ in outs for line in out.splitlines()]
    for split in ("train", "val", "eval"):
        mine = [line for line in lines if line.startswith(f"{split}:")]
        assert len(mine) == 2 and len({line.split(" at ")[1].split()[0] for line in mine}) == 1
        assert sum("(extracted now)" in line for line in mine) == 1, mine
    # One of them waited for the other, and said so.
    assert any("another process is making this feature cache; waiting" in e for _, e in outs)
    folders = [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and p.name[0] != "."]
    assert sorted(p.name.split("-")[0] for p in folders if p.name != "weights") == [
        "eval",
        "train",
        "val",
    ]
    train = next(p for p in folders if p.name.startswith("train-"))
    store = FeatureStore.open(train)
    assert len(store) == 231 and np.isfinite(store.gather([0, 230])).all()  # 25 for val
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]
