"""A strategy from another installed package, found through the `fuss_ray.strategies`
entry-point group, in `run` on Ray (its actors check the config too), `tune` and `study`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..conftest import job_env, tiny_config_dict

PLUGIN = '''
"""A strategy that moves the centroids only part of the way to the clients' mean."""
from typing import Literal

import numpy as np

from fuss_ray.federation.strategies.base import StrategyParams, register_strategy
from fuss_ray.federation.strategies.fedavg import IndexAveraging


class PartParams(StrategyParams):
    name: Literal["part-way"] = "part-way"
    step: float = 0.5


@register_strategy
class PartWay(IndexAveraging[PartParams]):
    name = "part-way"
    Params = PartParams

    def reduce_centroids(self, global_centroids, reduced, server_round):
        mean = reduced.mean("centroids")
        return (global_centroids + self.params.step * (mean - global_centroids)).astype(
            np.float32
        )
'''


def install_plugin(root: Path) -> Path:
    """The plugin as an installed distribution: its module and its .dist-info on a path."""
    (root / "fuss_part_way").mkdir(parents=True)
    (root / "fuss_part_way" / "__init__.py").write_text(PLUGIN)
    info = root / "fuss_part_way-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fuss-part-way\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fuss_ray.strategies]\npart-way = fuss_part_way\n")
    return root


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fuss_ray.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_a_plugin_strategy_runs_on_ray_in_a_search_and_in_a_study(
    cache_dir: Path, tmp_path: Path, ray_join: dict[str, str]
) -> None:
    plugin = install_plugin(tmp_path / "site")
    tree = tiny_config_dict(
        cache_dir,
        **{
            "federation.strategy": {"name": "part-way", "step": 0.25},
            "federation.executor": "ray",
            "federation.clients_per_actor": 2,
            "federation.num_cpus": 0.5,
            "tracking": False,
        },
    )
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    bare = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    # Without the plugin installed the name is refused in one line that lists the others.
    refused = _cli(["run", str(config), "--quiet"], bare, tmp_path)
    assert refused.returncode == 2
    assert "strategy.name must be one of: centralized, fedavg" in refused.stderr
    assert "part-way" not in refused.stderr.split("(got")[0]

    # Installed where the commands and every process of their Ray jobs run (the session's
    # Ray, joined as a cluster is: the plugin reaches its workers through the job's
    # runtime environment, as on a cluster whose nodes have it installed).
    env = {**bare, **job_env(ray_join, PYTHONPATH=str(plugin))}
    done = _cli(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["strategy"] == "part-way" and len(summary["actors"]) == 2
    assert summary["config"]["federation"]["strategy"] == {"name": "part-way", "step": 0.25}

    search = {
        "base": "run.yaml",
        "overrides": {"train.rounds": 1},
        "search": {
            "name": "plugin",
            "num_samples": 1,
            "max_concurrent": 1,
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "out_dir": str(tmp_path / "searches"),
            "scheduler": {"kind": "none"},
            "space": {"federation.strategy.step": {"type": "uniform", "low": 0.1, "high": 0.9}},
        },
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(search))
    tuned = _cli(["tune", str(tmp_path / "search.yaml")], env, tmp_path)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    result = json.loads(tuned.stdout.strip().splitlines()[-1])
    assert result["trials"] == 1 and result["errored"] == 0
    assert 0.1 <= result["best"]["params"]["federation.strategy.step"] <= 0.9

    study = {
        "base": "run.yaml",
        "overrides": {"train.rounds": 1, "federation.executor": "sequential"},
        "study": {
            "name": "plugin",
            "strategies": ["fedavg", "part-way"],
            "baseline": "fedavg",
            "seeds": [0],
            "out_dir": str(tmp_path / "studies"),
        },
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    studied = _cli(["study", str(tmp_path / "study.yaml")], env, tmp_path)
    assert studied.returncode == 0, studied.stderr[-3000:]
    report = json.loads((tmp_path / "studies" / "plugin" / "study.json").read_text())
    assert {r["strategy"] for r in report["runs"]} == {"fedavg", "part-way"}
