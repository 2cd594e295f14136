"""The virtual clock: stragglers, dropouts, availability and over-commitment by hand."""

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fuss_ray.config import SystemsConfig, validate_config
from fuss_ray.errors import UserError
from fuss_ray.federation.arrivals import state_bytes
from fuss_ray.federation.systems import SystemsModel
from fuss_ray.simulation import initial_state, run_simulation

from ..conftest import tiny_config_dict

MB = 1_250_000  # bytes in 10 Mbit: 1 s at 10 Mbps


def _model(tmp_path: Path, **cfg: Any) -> SystemsModel:
    trace = tmp_path / "speed.json"
    trace.write_text(json.dumps({"0": 1.0, "1": 0.5, "2": 0.1, "3": 2.0}))
    settings = {
        "enabled": True,
        "step_seconds": 1.0,
        "speed_trace": trace,
        "download_mbps": 10.0,
        "upload_mbps": 5.0,
        **cfg,
    }
    return SystemsModel(SystemsConfig.model_validate(settings), 0, [0, 1, 2, 3])


def test_deadline_drops_stragglers_and_the_clock_follows(tmp_path: Path) -> None:
    model = _model(tmp_path, deadline_s=10.0)
    # finish = 1 s down + 2 steps x 1 s / speed + 2 s up: 5, 7, 23 and 4 s
    plan = model.plan(1, [0, 1, 2, 3], target=3, local_steps=2, download_bytes=MB, upload_bytes=MB)
    assert [(t.client_id, t.status, t.finish_s) for t in plan.timelines] == [
        (0, "kept", 5.0),
        (1, "kept", 7.0),
        (2, "late", 23.0),
        (3, "kept", 4.0),
    ]
    assert plan.kept == [0, 1, 3] and plan.duration_s == 7.0  # closed at its 3rd arrival
    assert sum(t.download_bytes for t in plan.timelines) == 4 * MB
    assert sum(t.upload_bytes for t in plan.timelines) == 3 * MB  # the late one is not taken
    assert model.clock_s == 7.0
    plan = model.plan(2, [0, 1, 2, 3], target=4, local_steps=2, download_bytes=MB, upload_bytes=MB)
    assert plan.kept == [0, 1, 3] and plan.duration_s == 10.0  # waited for the deadline
    assert model.clock_s == 17.0


def test_over_commitment_keeps_the_first_arrivals(tmp_path: Path) -> None:
    model = _model(tmp_path)
    plan = model.plan(1, [0, 1, 2, 3], target=2, local_steps=2, download_bytes=MB, upload_bytes=MB)
    assert plan.kept == [0, 3] and plan.duration_s == 5.0
    assert plan.counts() == {"kept": 2, "late": 0, "extra": 2, "dropped": 0, "unavailable": 0}


def test_availability_windows_and_dropouts(tmp_path: Path) -> None:
    windows = tmp_path / "on.json"
    windows.write_text(json.dumps({"0": [[0, 6]], "1": [[0, 6]], "3": [[0, 100]]}))
    model = _model(tmp_path, availability_trace=windows)
    plan = model.plan(1, [0, 1, 2, 3], target=4, local_steps=2, download_bytes=MB, upload_bytes=MB)
    status = {t.client_id: t.status for t in plan.timelines}
    # 1 would finish at 7 s but goes offline at 6 s; 2 is never online
    assert status == {0: "kept", 1: "dropped", 2: "unavailable", 3: "kept"}
    assert plan.duration_s == 5.0 and model.clock_s == 5.0
    assert next(t for t in plan.timelines if t.client_id == 2).download_bytes == 0
    plan = model.plan(2, [0, 3], target=2, local_steps=2, download_bytes=MB, upload_bytes=MB)
    assert {t.client_id: t.status for t in plan.timelines} == {0: "dropped", 3: "kept"}
    # Random dropouts are seeded per (client, round): the same run twice, the same losses.
    a = _model(tmp_path, dropout=0.5).plan(1, [0, 1, 2, 3], 4, 2, MB, MB)
    b = _model(tmp_path, dropout=0.5).plan(1, [0, 1, 2, 3], 4, 2, MB, MB)
    assert a.timelines == b.timelines and 0 < a.counts()["dropped"] < 4
    assert all(not math.isfinite(t.finish_s) for t in a.timelines if t.status == "dropped")


def test_missing_trace_is_one_line(tmp_path: Path) -> None:
    cfg = SystemsConfig(enabled=True, speed_trace=tmp_path / "nope.json")
    with pytest.raises(UserError, match=r"^systems\.speed_trace: .*nope\.json does not exist$"):
        SystemsModel(cfg, 0, [0])


def test_simulation_trains_only_the_updates_that_arrive(cache_dir: Path, tmp_path: Path) -> None:
    trace = tmp_path / "speed.json"
    trace.write_text(json.dumps({"0": 1.0, "1": 1.0, "2": 0.01, "3": 1.0}))  # 2 straggles
    tree = tiny_config_dict(
        cache_dir,
        **{
            "tracking": False,
            "systems": {
                "enabled": True,
                "step_seconds": 1.0,
                "speed_trace": str(trace),
                "download_mbps": 8.0,
                "upload_mbps": 8.0,
                "deadline_s": 60.0,
            },
        },
    )
    cfg = validate_config(tree)
    size = state_bytes(initial_state(cfg, 152))
    summary = run_simulation(cfg, tmp_path / "out", show_progress=False)
    transfer = size / 1_000_000  # seconds to move one state at 8 Mbit/s = 1 MB/s
    for r, rnd in enumerate(summary["rounds"], start=1):
        late = [t for t in rnd["timeline"] if t["status"] == "late"]
        assert [t["client_id"] for t in late] == [2]  # 2 local steps at 1% speed: 200 s
        assert rnd["num_sampled"] == 3  # only the three in time trained
        assert rnd["sim_seconds"] == pytest.approx(60.0)  # waited for the straggler
        assert rnd["sim_clock_s"] == pytest.approx(60.0 * r)
        assert rnd["bytes_sent"] == 4 * size and rnd["bytes_received"] == 3 * size
        kept = [t for t in rnd["timeline"] if t["status"] == "kept"]
        assert [t["finish_s"] for t in kept] == [pytest.approx(2 * transfer + 2.0)] * 3
    assert summary["clients_per_round"] == 4  # all sampled, one never arrives
