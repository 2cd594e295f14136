"""The registry of local Rays: what a killed driver leaves behind is stopped, nothing else."""

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import fuss_ray.federation.local_ray as local_ray


def _record(
    folder: Path, name: str, driver: tuple[int, float], kids: list[tuple[int, float]]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "driver": {"pid": driver[0], "created": driver[1]},
        "children": [{"pid": p, "created": c} for p, c in kids],
    }
    (folder / f"{name}.json").write_text(json.dumps(payload))


def test_only_the_processes_of_dead_drivers_are_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_ray, "registry_dir", lambda: tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_driver = (gone.pid, 1.0)
    me = psutil.Process()
    live_driver = (me.pid, me.create_time())
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    try:
        ident = [(p.pid, psutil.Process(p.pid).create_time()) for p in sleepers]
        _record(tmp_path, "dead", dead_driver, [ident[0], (ident[1][0], ident[1][1] - 5.0)])
        _record(tmp_path, "live", live_driver, [ident[2]])
        assert local_ray.reap_orphans() == 1
        assert sleepers[0].wait(timeout=5) == -9  # the orphan of the dead driver
        assert sleepers[1].poll() is None  # same pid, other start time: a reused pid, kept
        assert sleepers[2].poll() is None  # its driver is alive
        assert sorted(p.name for p in tmp_path.iterdir()) == ["live.json"]
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
