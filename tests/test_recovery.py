"""Recovery: a killed run resumes, and a killed actor is restarted, to the same result bit
for bit as a run that met no failure."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fuss_ray.cli.main import main
from fuss_ray.config import validate_config
from fuss_ray.errors import SimulationError, UserError
from fuss_ray.federation.checkpoint import CheckpointWriter, latest_checkpoint
from fuss_ray.simulation import run_simulation

from .conftest import kill_when, tiny_config_dict


class Stop(Exception):
    """Stands in for a crash right after a round's checkpoint."""


def _stop_at(server_round: int) -> Any:
    def hook(summary: dict[str, Any]) -> None:
        if summary["round"] == server_round:
            raise Stop

    return hook


def _same_state(a: Path, b: Path) -> bool:
    with np.load(a / "final_state.npz") as x, np.load(b / "final_state.npz") as y:
        return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)


def _cfg(cache_dir: Path, **extra: Any) -> dict[str, Any]:
    # MOON keeps each client's previous model and FedAvgM keeps a server velocity: both
    # must come back from the checkpoint for the resumed run to match.
    return tiny_config_dict(
        cache_dir,
        **{
            "federation.strategy": "moon",
            "federation.server_momentum": 0.5,
            "train.rounds": 3,
            "tracking": False,
            **extra,
        },
    )


def test_checkpoint_folder_is_published_whole(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    writer = CheckpointWriter(root, keep=2)
    for r in (1, 2, 3):
        staging = writer.staging(r)
        arrays = {"global": {"w": np.full(2, r, dtype=np.float32)}}
        writer.publish(staging, r, arrays, {"client_files": {}})
    assert sorted(p.name for p in root.iterdir()) == ["LATEST", "round-000002", "round-000003"]
    # A crash mid-write of round 4 leaves a private folder and LATEST untouched.
    half = writer.staging(4)
    (half / "server.npz").write_bytes(b"truncated")
    ckpt = latest_checkpoint(root)
    assert ckpt is not None and ckpt.round == 3
    assert ckpt.server_tree()["global"]["w"].tolist() == [3.0, 3.0]
    # LATEST naming a folder that is gone (or broken) falls back to the newest whole one.
    (root / "LATEST").write_text("round-000009\n")
    ckpt = latest_checkpoint(root)
    assert ckpt is not None and ckpt.round == 3
    CheckpointWriter(root, keep=2)  # the next start sweeps the half-written folder
    assert not half.exists()


def test_resume_matches_an_uninterrupted_run(cache_dir: Path, tmp_path: Path) -> None:
    cfg = validate_config(_cfg(cache_dir))
    whole = run_simulation(cfg, tmp_path / "whole", show_progress=False)
    with pytest.raises(Stop):
        run_simulation(cfg, tmp_path / "cut", show_progress=False, on_round=_stop_at(1))
    ckpt = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    assert ckpt is not None and ckpt.round == 1
    assert sorted(ckpt.meta["client_files"]) == ["0", "1", "2", "3"]  # MOON's client state
    resumed = run_simulation(cfg, tmp_path / "cut", show_progress=False, resume=True)
    assert resumed["resumed_from_round"] == 1
    assert resumed["rounds"] == [
        {**r, "seconds": resumed["rounds"][i]["seconds"]} for i, r in enumerate(whole["rounds"])
    ]
    assert resumed["final"] == whole["final"]
    assert _same_state(tmp_path / "whole", tmp_path / "cut")


@pytest.mark.parametrize("windows", [False, True])
def test_the_systems_clock_continues_across_a_resume(
    windows: bool, cache_dir: Path, tmp_path: Path
) -> None:
    """Kill after round 2 and resume: the virtual clock, who is online, who drops out and
    who is late go on as if never interrupted (the same simulated times every round)."""
    systems: dict[str, Any] = {
        "enabled": True,
        "speed_sigma": 1.0,
        "bandwidth_sigma": 0.5,
        "availability": 0.7,
        "dropout": 0.2,
        "deadline_s": 1.0,
        "over_commit": 1.5,
        "step_seconds": 0.2,
    }
    if windows:  # on/off windows on the simulated clock: depend on the clock itself
        trace = {str(c): [[0.0, 0.9], [1.2, 2.5], [3.0, 99.0]] for c in range(4)}
        (tmp_path / "avail.json").write_text(json.dumps(trace))
        systems["availability_trace"] = str(tmp_path / "avail.json")
    tree = _cfg(cache_dir, **{"systems": systems, "train.rounds": 5, "federation.fraction": 0.5})
    cfg = validate_config(tree)
    whole = run_simulation(cfg, tmp_path / "whole", show_progress=False)
    with pytest.raises(Stop):
        run_simulation(cfg, tmp_path / "cut", show_progress=False, on_round=_stop_at(2))
    resumed = run_simulation(cfg, tmp_path / "cut", show_progress=False, resume=True)
    keys = ("sim_seconds", "sim_clock_s", "client_outcomes", "timeline", "num_sampled", "miou")
    got = [{k: r[k] for k in keys} for r in resumed["rounds"]]
    assert got == [{k: r[k] for k in keys} for r in whole["rounds"]]
    assert resumed["resumed_from_round"] == 2
    assert len({r["sim_seconds"] for r in whole["rounds"]}) > 1  # the clock really moves
    outcomes = [r["client_outcomes"] for r in whole["rounds"]]
    assert len({json.dumps(o, sort_keys=True) for o in outcomes}) > 1


def test_resume_refuses_another_config(cache_dir: Path, tmp_path: Path) -> None:
    cfg = validate_config(_cfg(cache_dir))
    with pytest.raises(Stop):
        run_simulation(cfg, tmp_path / "run", show_progress=False, on_round=_stop_at(1))
    other = validate_config(_cfg(cache_dir, **{"federation.fraction": 0.5}))
    with pytest.raises(UserError, match=r"federation\.fraction: 1\.0 vs 0\.5"):
        run_simulation(other, tmp_path / "run", show_progress=False, resume=True)
    # Where clients run is not part of what they compute: a new packing may resume.
    moved = validate_config(_cfg(cache_dir, **{"federation.clients_per_actor": 4}))
    summary = run_simulation(moved, tmp_path / "run", show_progress=False, resume=True)
    assert summary["resumed_from_round"] == 1


def test_a_checkpoint_of_the_single_data_model_resumes(cache_dir: Path, tmp_path: Path) -> None:
    """Checkpoints written while `data` was one model for every dataset (each setting of
    every dataset in it) resume, from the run's own tree as `--resume DIR` reads it."""
    from fuss_ray.config import LEGACY_DATA_DEFAULTS

    cfg = validate_config(_cfg(cache_dir))
    with pytest.raises(Stop):
        run_simulation(cfg, tmp_path / "run", show_progress=False, on_round=_stop_at(1))
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None
    meta = json.loads((ckpt.path / "meta.json").read_text())
    assert "curated_list" not in meta["config"]["data"]  # today's layout: synthetic's own
    for key in ("config", "outcome_config"):
        meta[key]["data"] = {**LEGACY_DATA_DEFAULTS, **meta[key]["data"]}
    (ckpt.path / "meta.json").write_text(json.dumps(meta))
    old = validate_config(meta["config"])
    assert old.to_dict() == cfg.to_dict() and old.digest() == cfg.digest()
    summary = run_simulation(old, tmp_path / "run", show_progress=False, resume=True)
    assert summary["resumed_from_round"] == 1


def test_resume_through_another_relative_path(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started from one folder with relative paths, resumed from another: same files."""
    cfg_path = tmp_path / "a" / "run.yaml"
    cfg_path.parent.mkdir()
    tree = _cfg(cache_dir)
    tree["features"]["cache_dir"] = os.path.relpath(cache_dir, cfg_path.parent)
    cfg_path.write_text(yaml.safe_dump(tree))
    monkeypatch.chdir(tmp_path / "a")
    from fuss_ray.config import load_config

    cfg = load_config(Path("run.yaml"))
    assert cfg.features.cache_dir == cache_dir  # resolved where the command ran
    with pytest.raises(Stop):
        run_simulation(cfg, Path("out").resolve(), show_progress=False, on_round=_stop_at(1))
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    assert main(["run", "--resume", "../a/out", "--quiet"]) == 0
    summary = json.loads((tmp_path / "a" / "out" / "summary.json").read_text())
    assert summary["resumed_from_round"] == 1 and len(summary["rounds"]) == 3
    assert not (tmp_path / "b" / ".fuss_cache").exists()  # no cache built in the new cwd


def test_resume_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--resume", str(tmp_path / "nowhere")]) == 2
    assert main(["run", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"fuss-ray: error: --resume {tmp_path / 'nowhere'}: no such run folder",
        f"fuss-ray: error: --resume {tmp_path}: no checkpoint there to resume from",
    ]


def _mlflow_rounds(uri: str) -> tuple[list[str], dict[str, list[int]]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    steps = {
        r.info.run_id: sorted(m.step for m in client.get_metric_history(r.info.run_id, "miou"))
        for r in runs
    }
    return [r.info.status for r in runs], steps


def _ray_cfg(cache_dir: Path, uri: str) -> dict[str, Any]:
    return _cfg(
        cache_dir,
        **{
            "federation.executor": "ray",
            "federation.num_cpus": 0.5,
            "train.local_steps": 25,  # rounds of seconds, so that a kill lands inside one
            "tracking": {"uri": uri, "experiment": "recovery", "overlays": 0},
        },
    )


@pytest.fixture(scope="module")
def reference(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The failure-free run both Ray tests must reproduce (sequential: bit-identical)."""
    tree = _ray_cfg(cache_dir, "sqlite:///unused.db")
    tree["federation"]["executor"] = "sequential"
    tree["tracking"] = False
    out = tmp_path_factory.mktemp("reference")
    return out, run_simulation(validate_config(tree), out, show_progress=False)


def _matches(out: Path, summary: dict[str, Any], reference: tuple[Path, Any]) -> None:
    ref_out, ref = reference
    assert summary["final"] == ref["final"]
    assert [r["miou"] for r in summary["rounds"]] == [r["miou"] for r in ref["rounds"]]
    assert _same_state(out, ref_out)


@pytest.mark.ray
def test_sigkill_mid_round_then_resume_on_ray(
    cache_dir: Path, tmp_path: Path, ray_session: None, reference: tuple[Path, Any]
) -> None:
    import ray

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tree = _ray_cfg(cache_dir, uri)
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(tree))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "fuss_ray.cli.main", "run", str(cfg_path), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--quiet"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    latest = out / "checkpoints" / "LATEST"
    # 0.3 s after round 1's checkpoint, round 2 is under way.
    kill_when(proc, latest.exists, 300, "no checkpoint of round 1", poll_s=0.05, grace_s=0.3)
    assert latest.read_text().strip() == "round-000001", "the kill came after round 2 ended"
    assert not (out / "summary.json").exists()

    done = subprocess.run(
        [sys.executable, "-m", "fuss_ray.cli.main", "run", "--resume", str(out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["resumed_from_round"] == 1
    _matches(out, resumed, reference)

    statuses, steps = _mlflow_rounds(uri)  # one MLflow run, each round logged once
    assert statuses == ["FINISHED"]
    assert list(steps.values()) == [[1, 2, 3]]
    assert resumed["mlflow_run_id"] in steps


@pytest.mark.slow
def test_sigkill_of_a_run_with_its_own_ray_leaves_nothing_behind(
    cache_dir: Path, tmp_path: Path, reference: tuple[Path, Any]
) -> None:
    """No RAY_ADDRESS: the run starts its own local Ray. Only the driver is SIGKILLed (as
    `kill -9 PID` or the OOM killer would); Ray's agents outlive it. `--resume` must give
    the uninterrupted result, and no process of the killed run may be alive afterwards."""
    import psutil

    tree = _ray_cfg(cache_dir, f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(tree))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "fuss_ray.cli.main", "run", str(cfg_path), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    latest = out / "checkpoints" / "LATEST"
    deadline = time.time() + 300
    while not latest.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.time() < deadline, "no checkpoint of round 1 within 300 s"
        time.sleep(0.05)
    time.sleep(0.3)  # round 2 is under way
    killed_tree = psutil.Process(proc.pid).children(recursive=True)
    assert any("raylet" in p.name() for p in killed_tree)  # its own Ray, not the session's
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    done = subprocess.run(
        [sys.executable, "-m", "fuss_ray.cli.main", "run", "--resume", str(out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["resumed_from_round"] == 1
    _matches(out, resumed, reference)
    deadline = time.time() + 10
    while (alive := [p for p in killed_tree if p.is_running()]) and time.time() < deadline:
        time.sleep(0.5)
    assert not [(p.pid, p.name()) for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def ray_node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


@pytest.fixture
def loops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every round loop a run builds, so that a test can ask where its processes are."""
    import fuss_ray.simulation as simulation

    made: list[Any] = []
    real_make = simulation.make_loop

    def capture(parts: Any) -> Any:
        made.append(real_make(parts))
        return made[-1]

    monkeypatch.setattr(simulation, "make_loop", capture)
    return made


@pytest.mark.ray
def test_killed_actor_is_restarted_and_its_clients_retrained(
    cache_dir: Path,
    tmp_path: Path,
    ray_session: None,
    reference: tuple[Path, Any],
    loops: list[Any],
) -> None:
    import pyarrow.parquet as pq

    killers: list[threading.Timer] = []

    def kill_during_round_2(summary: dict[str, Any]) -> None:
        if summary["round"] == 1:  # round 2 starts as soon as this returns
            victim = loops[0].host_pids()[0]  # hosts clients 0 and 1
            killers.append(threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)))
            killers[0].start()

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = validate_config(_ray_cfg(cache_dir, uri))
    out = tmp_path / "out"
    summary = run_simulation(cfg, out, show_progress=False, on_round=kill_during_round_2)
    killers[0].join()

    second = summary["rounds"][1]
    assert second["failed_actors"] == 1 and second["retried_clients"] == 2
    assert second["lost_clients"] == [] and summary["rounds"][2]["failed_actors"] == 0
    _matches(out, summary, reference)  # nothing lost, nothing counted twice
    # The rounds ran in the server actor, which handled its host's death itself.
    server = summary["server"]
    assert server["actor"] is True and server["pid"] != os.getpid()
    assert server["node_id"] == ray_node_id()
    clients = pq.read_table(out / "clients.parquet").to_pylist()
    assert [c["rounds_participated"] for c in clients] == [3, 3, 3, 3]
    from mlflow import MlflowClient

    history = MlflowClient(tracking_uri=uri).get_metric_history(
        summary["mlflow_run_id"], "failed_actors"
    )
    assert [(m.step, m.value) for m in history] == [(1, 0.0), (2, 1.0), (3, 0.0)]


@pytest.mark.ray
def test_a_dead_server_actor_stops_the_run_in_one_line_and_resume_matches(
    cache_dir: Path,
    tmp_path: Path,
    ray_session: None,
    reference: tuple[Path, Any],
    loops: list[Any],
) -> None:
    import psutil

    hosts: list[int] = []
    killers: list[threading.Timer] = []

    def kill_the_server_in_round_2(summary: dict[str, Any]) -> None:
        if summary["round"] == 1:  # round 2 starts as soon as this returns
            hosts.extend(loops[0].host_pids())
            server = loops[0].where()["pid"]
            killers.append(threading.Timer(0.3, os.kill, (server, signal.SIGKILL)))
            killers[0].start()

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = validate_config(_ray_cfg(cache_dir, uri))
    out = tmp_path / "out"
    with pytest.raises(SimulationError) as err:
        run_simulation(cfg, out, show_progress=False, on_round=kill_the_server_in_round_2)
    killers[0].join()
    assert str(err.value) == (
        "the server actor died in round 2; the checkpoint of round 1 is whole: "
        f"continue with fuss-ray run --resume {out}"
    )
    assert not (out / "summary.json").exists()
    deadline = time.time() + 30  # its host actors die with it (Ray's ownership)
    while any(psutil.pid_exists(p) for p in hosts) and time.time() < deadline:
        time.sleep(0.2)
    alive = [psutil.Process(p) for p in hosts if psutil.pid_exists(p)]
    assert all(p.status() == psutil.STATUS_ZOMBIE for p in alive)

    resumed = run_simulation(cfg, out, show_progress=False, resume=True)
    assert resumed["resumed_from_round"] == 1
    _matches(out, resumed, reference)
    statuses, steps = _mlflow_rounds(uri)  # the same MLflow run, each round logged once
    assert statuses == ["FINISHED"] and list(steps.values()) == [[1, 2, 3]]


def _kill_once_training(pid: int, cpu_s: float = 0.05, within_s: float = 120.0) -> None:
    """SIGKILL a host actor once it has spent `cpu_s` core-seconds in the next round.

    Between rounds a host is idle, and writing its clients' checkpoint takes it far less
    than that, so the kill lands mid-training however fast the machine (a fixed delay
    once landed in the checkpoint on a fast one, which is a different failure)."""
    import psutil

    proc = psutil.Process(pid)
    start = sum(proc.cpu_times()[:2])
    deadline = time.time() + within_s
    while sum(proc.cpu_times()[:2]) - start < cpu_s:
        assert time.time() < deadline, "the victim never trained"
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)


@pytest.mark.ray
@pytest.mark.slow
def test_chaos_a_random_actor_killed_in_several_rounds(
    cache_dir: Path, tmp_path: Path, ray_session: None, loops: list[Any]
) -> None:
    """100 clients in 4 actors; in each of rounds 2, 3 and 4 a thread SIGKILLs a random
    actor's process mid-round. The run must end bit-identical to a failure-free one, and
    its summary must count every failure."""
    import random

    tree = _cfg(
        cache_dir,
        **{
            "data.num_images": 200,
            "partition.kind": "iid",
            "partition.num_clients": 100,
            "train.rounds": 4,
            "train.local_steps": 3,
            "train.batch_size": 2,
            "federation.clients_per_actor": 25,
        },
    )
    tree["tracking"] = False
    reference = run_simulation(validate_config(tree), tmp_path / "ref", show_progress=False)

    tree["federation"].update({"executor": "ray", "num_cpus": 0.5})
    pick = random.Random(0)
    victims: list[int] = []
    killers: list[threading.Timer] = []

    def kill_one_in_the_next_round(summary: dict[str, Any]) -> None:
        if summary["round"] == 4:  # the run's end: no next round
            return
        for k in killers:
            k.join()
        victim = pick.randrange(4)
        victims.append(victim)
        pid = loops[-1].host_pids()[victim]  # asked now: a restarted actor has a new process
        killers.append(threading.Thread(target=_kill_once_training, args=(pid,)))
        killers[-1].start()

    out = tmp_path / "chaos"
    summary = run_simulation(
        validate_config(tree), out, show_progress=False, on_round=kill_one_in_the_next_round
    )
    for k in killers:
        k.join()
    assert len(victims) == 3
    rounds = summary["rounds"]
    assert [r["failed_actors"] for r in rounds] == [0, 1, 1, 1]
    assert [r["retried_clients"] for r in rounds] == [0, 25, 25, 25]
    assert all(r["lost_clients"] == [] for r in rounds)
    assert summary["final"] == reference["final"]
    assert [r["miou"] for r in rounds] == [r["miou"] for r in reference["rounds"]]
    assert _same_state(out, tmp_path / "ref")
