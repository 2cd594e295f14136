"""Asynchronous federation (FedBuff): weights by hand, refusals in one line, the same bits
on both executors and across a kill and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fuss_ray.cli.main import main
from fuss_ray.config import FedBuffConfig, validate_config
from fuss_ray.federation.fedbuff import staleness_weight
from fuss_ray.federation.server_update import build_update
from fuss_ray.simulation import run_simulation

from ..conftest import tiny_config_dict


def test_staleness_weights_by_hand() -> None:
    assert staleness_weight(FedBuffConfig(staleness="constant"), 7) == 1.0
    poly = FedBuffConfig(staleness="polynomial", exponent=0.5)
    assert staleness_weight(poly, 0) == 1.0 and staleness_weight(poly, 3) == pytest.approx(0.5)
    hinge = FedBuffConfig(staleness="hinge", hinge_a=10.0, hinge_b=4)
    assert staleness_weight(hinge, 4) == 1.0
    assert staleness_weight(hinge, 6) == pytest.approx(1 / 21)


def test_a_buffer_moves_the_model_by_the_weighted_mean_change() -> None:
    strategy = build_update({"name": "fedavg"}, 0)
    state = {"head.w": np.zeros(2, np.float32), "centroids": np.ones((2, 2), np.float32)}
    parts = [
        {"head.w": np.full(2, 1.0), "centroids": np.full((2, 2), 2.0)},
        {"head.w": np.full(2, 4.0), "centroids": np.full((2, 2), -1.0)},
    ]
    new = strategy.apply_buffer(state, [3.0, 1.0], parts, 1)
    assert new["head.w"].tolist() == [1.75, 1.75]  # (3 x 1 + 1 x 4) / 4
    assert new["centroids"].tolist() == [[2.25, 2.25]] * 2  # 1 + (3 x 2 - 1) / 4
    pooled = build_update({"name": "fuss-maximin"}, 0)
    chosen = pooled.apply_buffer(
        state, [1.0], [{"head.w": np.zeros(2), "centroids": np.array([[9.0, 9.0], [1, 1]])}], 1
    )
    assert chosen["centroids"].tolist() == [[1.0, 1.0], [9.0, 9.0]]  # anchored at the global


def _tree(cache_dir: Path, **extra: Any) -> dict[str, Any]:
    return tiny_config_dict(
        cache_dir,
        **{
            "federation.strategy": "moon",  # a client keeps its previous model: order matters
            "federation.mode": "async",
            "federation.fedbuff": {"concurrency": 3, "buffer_size": 2, "staleness": "hinge"},
            "train.rounds": 5,
            "tracking": False,
            "systems": {"enabled": True, "speed_sigma": 1.0, "dropout": 0.2},
            **extra,
        },
    )


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["federation.strategy=local"], "strategy 'local' has no asynchronous form"),
        (["federation.strategy=scaffold"], "strategy 'scaffold' has no asynchronous form"),
        (["federation.head_aggregation=median"], "federation.head_aggregation"),
        (["systems.deadline_s=3"], "systems.deadline_s"),
        (["federation.fedbuff.concurrency=9"], "federation.fedbuff.concurrency: 9"),
    ],
)
def test_what_has_no_asynchronous_meaning_is_refused_in_one_line(
    sets: list[str],
    message: str,
    cache_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_tree(cache_dir)))
    argv = ["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def _same(a: dict[str, Any], b: dict[str, Any], out_a: Path, out_b: Path) -> None:
    keys = ("miou", "val_miou", "sim_clock_s", "async", "num_sampled", "mean_loss")
    assert [{k: r[k] for k in keys} for r in a["rounds"]] == [
        {k: r[k] for k in keys} for r in b["rounds"]
    ]
    with np.load(out_a / "final_state.npz") as x, np.load(out_b / "final_state.npz") as y:
        assert all(np.array_equal(x[k], y[k]) for k in x.files)


class Stop(Exception):
    pass


def test_arrivals_follow_the_clock_and_a_resume_continues_exactly(
    cache_dir: Path, tmp_path: Path
) -> None:
    cfg = validate_config(_tree(cache_dir))
    whole = run_simulation(cfg, tmp_path / "whole", show_progress=False)
    clocks = [r["sim_clock_s"] for r in whole["rounds"]]
    assert clocks == sorted(clocks) and clocks[0] > 0  # the simulated clock only moves on
    assert all(r["num_sampled"] <= 2 for r in whole["rounds"])  # one buffer per update
    assert max(r["async"]["staleness_max"] for r in whole["rounds"]) >= 1  # stale updates

    def stop(summary: dict[str, Any]) -> None:
        if summary["round"] == 2:
            raise Stop

    with pytest.raises(Stop):
        run_simulation(cfg, tmp_path / "cut", show_progress=False, on_round=stop)
    meta = json.loads((tmp_path / "cut" / "checkpoints" / "round-000002" / "meta.json").read_text())
    assert len(meta["server"]["async"]["in_flight"]) == 3  # what was training, kept
    resumed = run_simulation(cfg, tmp_path / "cut", show_progress=False, resume=True)
    _same(whole, resumed, tmp_path / "whole", tmp_path / "cut")


@pytest.mark.ray
def test_ray_and_sequential_agree_bit_for_bit(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    seq = run_simulation(validate_config(_tree(cache_dir)), tmp_path / "seq", show_progress=False)
    tree = _tree(cache_dir)
    tree["federation"].update({"executor": "ray", "clients_per_actor": 1, "num_cpus": 0.5})
    par = run_simulation(validate_config(tree), tmp_path / "ray", show_progress=False)
    _same(seq, par, tmp_path / "seq", tmp_path / "ray")
