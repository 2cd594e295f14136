"""End-to-end runs on the tiny synthetic config, in-process and sequential (fast)."""

import json
import math
from pathlib import Path

import pytest

from fuss_ray.config import validate_config
from fuss_ray.federation.strategies import STRATEGIES
from fuss_ray.simulation import run_simulation

from .conftest import tiny_config_dict


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_runs(strategy: str, cache_dir: Path, tmp_path: Path) -> None:
    cfg = validate_config(tiny_config_dict(cache_dir, **{"federation.strategy": strategy}))
    summary = run_simulation(cfg, tmp_path, show_progress=False)
    assert summary["strategy"] == strategy
    assert len(summary["rounds"]) == 2
    assert all(math.isfinite(r["miou"]) for r in summary["rounds"])
    assert summary["num_clients"] == (1 if strategy == "centralized" else 4)
    # Centralised training defaults to one federated model's budget: 2 steps per round.
    assert summary["config"]["train"]["local_steps"] == 2
    trained = 1 if strategy == "centralized" else 4  # clients trained per round
    assert summary["budget"] == {
        "local_steps_per_round": 2,
        "client_steps_total": 2 * 2 * trained,
        "model_steps": 2 * 2,
        **({"centralized": "per_model"} if strategy == "centralized" else {}),
    }
    if strategy == "local":
        assert len(summary["final"]["per_client"]) == 4
        mean = sum(c["miou"] for c in summary["final"]["per_client"]) / 4
        assert summary["final"]["miou"] == pytest.approx(mean)


def test_centralised_training_with_the_federations_whole_budget(
    cache_dir: Path, tmp_path: Path
) -> None:
    """`budget: total`: K x local_steps per round, the compute all clients spend."""
    tree = tiny_config_dict(
        cache_dir, **{"federation.strategy": {"name": "centralized", "budget": "total"}}
    )
    summary = run_simulation(validate_config(tree), tmp_path, show_progress=False)
    assert summary["config"]["train"]["local_steps"] == 8
    assert summary["budget"] == {
        "local_steps_per_round": 8,
        "client_steps_total": 16,
        "model_steps": 16,
        "centralized": "total",
    }


def test_same_seed_same_result_and_schema(cache_dir: Path, tmp_path: Path) -> None:
    cfg = validate_config(tiny_config_dict(cache_dir))
    a = run_simulation(cfg, tmp_path / "a", show_progress=False)
    b = run_simulation(cfg, tmp_path / "b", show_progress=False)
    assert a["final"] == b["final"]
    assert [r["miou"] for r in a["rounds"]] == [r["miou"] for r in b["rounds"]]
    on_disk = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert {"strategy", "num_clients", "seed", "rounds", "final", "config"} <= set(on_disk)
    assert set(on_disk["rounds"][0]) >= {"round", "miou", "pixel_acc", "seconds"}
    assert set(on_disk["final"]) >= {"miou", "pixel_acc"}
    assert on_disk["config"]["partition"]["kind"] == "dirichlet"
    assert (tmp_path / "a" / "partition.parquet").is_file()
    assert (tmp_path / "a" / "final_state.npz").is_file()
    assert not list((tmp_path / "a").glob(".*.tmp"))  # nothing half-written left behind
    other = run_simulation(
        validate_config(tiny_config_dict(cache_dir, seed=1)), tmp_path / "c", show_progress=False
    )
    assert other["final"] != a["final"]
