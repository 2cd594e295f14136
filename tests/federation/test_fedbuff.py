"""Asynchronous federation (FedBuff): weights by hand, refusals in one line, the same bits
on both executors and across a kill and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fuss_ray.cli.main import main
from fuss_ray.config import FedBuffConfig, validate_config
from fuss_ray.federation.buffer import Buffer, Group
from fuss_ray.federation.checkpoint import load_tree, save_tree
from fuss_ray.federation.fedbuff import staleness_weight
from fuss_ray.federation.reduction import reduce_updates
from fuss_ray.federation.server_update import ServerUpdate, build_update
from fuss_ray.federation.types import ClientUpdate, ModelState
from fuss_ray.simulation import run_simulation

from ..conftest import tiny_config_dict


def test_staleness_weights_by_hand() -> None:
    assert staleness_weight(FedBuffConfig(staleness="constant"), 7) == 1.0
    poly = FedBuffConfig(staleness="polynomial", exponent=0.5)
    assert staleness_weight(poly, 0) == 1.0 and staleness_weight(poly, 3) == pytest.approx(0.5)
    hinge = FedBuffConfig(staleness="hinge", hinge_a=10.0, hinge_b=4)
    assert staleness_weight(hinge, 4) == 1.0
    assert staleness_weight(hinge, 6) == pytest.approx(1 / 21)


def _group(rule: ServerUpdate, version: int, start: ModelState, change: dict, n: int) -> Group:
    """One client that started from `start` and moved it by `change`, reduced."""
    state = {k: (v + change[k]).astype(np.float32) for k, v in start.items()}
    update = ClientUpdate(version, n, state, np.ones(2) / 2, 0.0)
    return Group(version, start, reduce_updates(rule, start, rule.grid(start, 4), [update], None))


def test_a_buffer_moves_the_model_by_the_weighted_mean_change() -> None:
    strategy = build_update({"name": "fedavg"}, 0)
    state = {"head.w": np.zeros(2, np.float32), "centroids": np.ones((2, 2), np.float32)}
    older = {"head.w": np.full(2, -1.0, np.float32), "centroids": np.full((2, 2), 5.0, np.float32)}
    fresh = _group(strategy, 1, state, {"head.w": 1.0, "centroids": 2.0}, 3)
    stale = _group(strategy, 0, older, {"head.w": 4.0, "centroids": -1.0}, 1)  # from v0
    new = strategy.merge(Buffer(state, 1, [fresh, stale]), 2)
    assert new["head.w"].tolist() == [1.75, 1.75]  # 0 + (3 x 1 + 1 x 4) / 4
    assert new["centroids"].tolist() == [[2.25, 2.25]] * 2  # 1 + (3 x 2 - 1) / 4
    stale.weight = 1 / 3  # its staleness weight: the two now count 3 : 1/3
    moved = strategy.merge(Buffer(state, 1, [fresh, stale]), 2)["head.w"]
    assert moved.tolist() == pytest.approx([1.3, 1.3])  # (3 x 1 + 4 / 3) / (10 / 3)
    pooled = build_update({"name": "fuss-maximin"}, 0)
    moved = {"head.w": 0.0, "centroids": np.array([[8.0, 8.0], [0, 0]])}
    chosen = pooled.merge(Buffer(state, 1, [_group(pooled, 0, state, moved, 1)]), 2)
    assert chosen["centroids"].tolist() == [[1.0, 1.0], [9.0, 9.0]]  # anchored at the global
    fresh_pool = pooled.merge(Buffer(state, 1, [_group(pooled, 1, state, moved, 1)]), 2)
    assert fresh_pool["centroids"].tolist() == [[9.0, 9.0], [1.0, 1.0]]  # a round's pool


def test_a_synchronous_round_is_a_buffer_of_one_fresh_group() -> None:
    """The stale-group term of a fresh group is exactly zero: a round's merge is the plain
    weighted mean, bit for bit, whatever the strategy."""
    rng = np.random.default_rng(0)
    state = {
        "head.w": rng.normal(size=(3, 4)).astype(np.float32),
        "centroids": np.eye(3, 4, dtype=np.float32),
    }
    for name in ("fedavg", "ot-match"):
        rule = build_update({"name": name}, 0)
        ups = [
            ClientUpdate(
                c,
                c + 1,
                {k: (v + rng.normal(size=v.shape)).astype(np.float32) for k, v in state.items()},
                np.ones(3) / 3,
                0.0,
            )
            for c in range(3)
        ]
        reduced = reduce_updates(rule, state, rule.grid(state, 6), ups, None)
        new = rule.merge(Buffer.round(state, 0, reduced), 1)
        assert np.array_equal(new["head.w"], reduced.mean("head.w"))
        key = "centroids" if name == "fedavg" else "centroids.aligned"
        assert np.array_equal(new["centroids"], reduced.mean(key))


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
    shutil.copytree(tmp_path / "cut", tmp_path / "old")
    resumed = run_simulation(cfg, tmp_path / "cut", show_progress=False, resume=True)
    _same(whole, resumed, tmp_path / "whole", tmp_path / "cut")
    # The same checkpoint in the earlier layout (each trained dispatch's change against
    # its start model, and only the start models untrained dispatches need) resumes to
    # the same run, up to rounding: the change lands on the model it started from.
    assert _as_earlier_layout(tmp_path / "old" / "checkpoints" / "round-000002") >= 1
    legacy = run_simulation(cfg, tmp_path / "old", show_progress=False, resume=True)
    assert [r["round"] for r in legacy["rounds"]] == [1, 2, 3, 4, 5]
    assert [r["miou"] for r in legacy["rounds"]] == pytest.approx(
        [r["miou"] for r in whole["rounds"]], abs=0.5
    )
    whole_state, legacy_state = (
        np.load(tmp_path / d / "final_state.npz") for d in ("whole", "old")
    )
    for k in whole_state.files:
        x, y = whole_state[k], legacy_state[k]
        assert np.allclose(x, y, rtol=1e-3, atol=1e-4 * np.abs(x).max()), k


def _as_earlier_layout(ckpt: Path) -> int:
    """Rewrite an asynchronous checkpoint as the code before buffers were groups wrote
    it; returns how many trained dispatches it holds."""
    tree = load_tree(ckpt / "server.npz")
    meta = json.loads((ckpt / "meta.json").read_text())
    state = meta["server"]["async"]
    reduced = state.pop("reduced")
    dispatches = [*state["buffer"], *state["in_flight"]]
    for d in dispatches:
        if not d["trained"]:
            continue
        arrays = tree.pop(f"reduced:{d['number']}")
        info = reduced[str(d["number"])]
        start = tree[f"start:{d['version']}"]
        change = {}
        for name, total in arrays.items():  # one client: its value is the mean
            key = name.removeprefix("sum/")
            value = total.astype(np.float64) * 2.0 ** -info["shifts"][key] / info["weight"]
            change[key] = value - start[key]  # head and index-wise centroids (MOON)
        tree[f"contribution:{d['number']}"] = change
    untrained = {d["version"] for d in dispatches if not d["trained"]}
    for name in [n for n in tree if n.startswith("start:")]:
        if int(name.partition(":")[2]) not in untrained:
            del tree[name]  # the earlier layout kept a start model only for training
    save_tree(ckpt / "server.npz", tree)
    (ckpt / "meta.json").write_text(json.dumps(meta))
    return sum(d["trained"] for d in dispatches)


@pytest.mark.ray
def test_ray_and_sequential_agree_bit_for_bit(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    seq = run_simulation(validate_config(_tree(cache_dir)), tmp_path / "seq", show_progress=False)
    tree = _tree(cache_dir)
    tree["federation"].update({"executor": "ray", "clients_per_actor": 1, "num_cpus": 0.5})
    par = run_simulation(validate_config(tree), tmp_path / "ray", show_progress=False)
    _same(seq, par, tmp_path / "seq", tmp_path / "ray")
