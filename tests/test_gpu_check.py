"""tools/gpu_check.py, the device machine's check, end to end on the CPU (`--smoke`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fuss_ray.config import validate_config
from fuss_ray.simulation import host_spec, prepare

from .conftest import tiny_config_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))


@pytest.mark.ray
def test_the_gpu_check_runs_every_part_on_real_cached_features(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    import gpu_check

    cfg = validate_config(tiny_config_dict(cache_dir))
    features = Path(host_spec(cfg, prepare(cfg, show_progress=False)).store_path)
    out = tmp_path / "gpu.json"
    args = ["--smoke", "--device", "cpu", "--features", str(features), "--json", str(out)]
    assert gpu_check.main([*args, "--cache", str(cache_dir)]) == 0
    result = json.loads(out.read_text())
    engines = [(r["shape"], r["engine"]) for r in result["steps"]]
    assert engines == [(s, e) for s in ("benchmark", "canonical") for e in ("per-client", 1, 2)]
    assert all(r["client_steps_per_s"] > 0 for r in result["steps"])
    assert result["bits"]["same_bits"] is True  # stacks of 1 and 2, on the CPU
    assert [(r["actors"], r["client_batch"]) for r in result["rounds"]] == [(1, 2), (2, 2)]
    assert [r["strategy"] for r in result["strategies"]] == ["fuss-maximin", "moon"]
    assert result["features"] == json.loads((features / "meta.json").read_text())["feature_shape"]


def test_the_gpu_check_refuses_a_folder_without_features(tmp_path: Path) -> None:
    import gpu_check

    assert gpu_check.main(["--smoke", "--device", "cpu", "--features", str(tmp_path)]) == 2


def test_without_ray_the_actors_are_processes(cache_dir: Path, tmp_path: Path) -> None:
    """The device machine has no Ray (its wheel is too big to carry there): `rounds` runs
    one process per actor and `strategies` one host."""
    import gpu_check

    cfg = validate_config(tiny_config_dict(cache_dir))
    features = Path(host_spec(cfg, prepare(cfg, show_progress=False)).store_path)
    out = tmp_path / "gpu.json"
    args = ["--smoke", "--device", "cpu", "--features", str(features), "--json", str(out)]
    extra = ["--actors", "processes", "--parts", "rounds", "strategies", "--cache", str(cache_dir)]
    assert gpu_check.main([*args, *extra]) == 0
    result = json.loads(out.read_text())
    assert [(r["actors"], r["actors_are"]) for r in result["rounds"]] == [
        (1, "processes"),
        (2, "processes"),
    ]
    assert all(len(r["rounds_s"]) == 2 and r["s_per_round"] > 0 for r in result["rounds"])
    assert [r["strategy"] for r in result["strategies"]] == ["fuss-maximin", "moon"]
