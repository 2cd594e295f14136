"""A real two-node Ray cluster on loopback: a head and a worker started with `ray start`.

The simulation runs in its own process and joins the cluster through `--address`, as it
would on a real cluster; its actors are spread over both nodes, then the worker node is
killed mid-run and the run must finish exactly as a failure-free one. The round loop runs
in a server actor: on the worker node in the first run, on the head node (its default)
in the second, which therefore survives losing the worker.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fuss_ray.config import validate_config
from fuss_ray.simulation import run_simulation

from ..conftest import free_port, tiny_config_dict

RAY = str(Path(sys.executable).with_name("ray"))
# Loopback clusters need no tokens; the nodes and the driver must agree on that.
ENV = {
    **os.environ,
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    # Notice a dead node in seconds rather than the default half minute.
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    # No idle workers started ahead of the actors (as fuss-ray's own local Ray).
    "RAY_enable_worker_prestart": "0",
}


def _node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [RAY, "start", "--block", "--disable-usage-stats", *args],
        env=ENV,
        start_new_session=True,  # one process group per node, so a node can be killed whole
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _stop(node: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait_s: float = 5) -> None:
    """Stop a node's process group; what has not exited within `wait_s` is killed (Ray's
    graceful stop of an idle node otherwise takes about half a minute)."""
    if node.poll() is None:
        os.killpg(node.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=wait_s)
    with contextlib.suppress(ProcessLookupError):  # the rest of its group, whatever is left
        os.killpg(node.pid, signal.SIGKILL)
    node.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Head (3 CPUs) and worker (2 CPUs, custom resource `fuss_worker`); stopped cleanly.

    The head holds the server actor and, once the worker is gone, both host actors.
    """
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = _node(
        [
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=3",
            "--include-dashboard=false",
        ],
        tmp_path / "head.log",
    )
    worker = _node(
        [
            f"--address={address}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            '--resources={"fuss_worker": 3}',
        ],
        tmp_path / "worker.log",
    )
    try:
        deadline = time.time() + 180
        while True:
            status = subprocess.run(
                [RAY, "status", f"--address={address}"],
                env=ENV,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if "fuss_worker" in status.stdout:
                break
            assert head.poll() is None and worker.poll() is None, "a node failed to start"
            assert time.time() < deadline, "the two-node cluster did not come up in 180 s"
            time.sleep(1)
        yield address, worker
    finally:
        _stop(worker)
        _stop(head)
    assert head.poll() is not None and worker.poll() is not None


def _run(cfg: dict[str, Any], out: Path, address: str, *extra: str) -> subprocess.Popen[str]:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fuss_ray.cli.main",
            "run",
            str(path),
            "--out",
            str(out),
            "--address",
            address,
            "--quiet",
            *extra,
        ],
        env={k: v for k, v in ENV.items() if k != "RAY_ADDRESS"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.ray
def test_actors_spread_over_two_nodes_and_survive_losing_one(
    cluster: tuple[str, subprocess.Popen[bytes]], cache_dir: Path, tmp_path: Path
) -> None:
    address, worker = cluster
    base = tiny_config_dict(
        cache_dir,
        **{
            "tracking": False,
            "train.rounds": 3,
            "train.local_steps": 25,
            "federation.strategy": "moon",
            "federation.executor": "ray",
            "federation.num_cpus": 1.0,
        },
    )

    # The custom resource exists only on the worker: requiring it pins every actor there,
    # the server actor too (its 1 CPU and the hosts' 2 x 0.5 fill the worker's 2).
    pinned = json.loads(json.dumps(base))
    pinned["federation"]["resources"] = {"fuss_worker": 1}
    pinned["federation"]["num_cpus"] = 0.5
    pinned["federation"]["server"] = {"resources": {"fuss_worker": 1}}
    pinned["train"]["rounds"] = 1
    proc = _run(pinned, tmp_path / "pinned", address)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    pinned_summary = json.loads((tmp_path / "pinned" / "summary.json").read_text())
    on_worker = pinned_summary["actors"]
    assert len(on_worker) == 2 and len({a["node"] for a in on_worker}) == 1
    worker_node = on_worker[0]["node"]
    server = pinned_summary["server"]
    assert server["actor"] is True and server["node_id"] == worker_node
    assert server["pid"] != proc.pid

    spread = json.loads(json.dumps(base))
    spread["federation"]["placement"] = "spread"
    out = tmp_path / "spread"
    proc = _run(spread, out, address)
    latest = out / "checkpoints" / "LATEST"
    deadline = time.time() + 300
    while not latest.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "no checkpoint of round 1 within 300 s"
        time.sleep(0.05)
    time.sleep(0.3)  # round 2 is under way on both nodes
    _stop(worker, signal.SIGKILL)  # the whole worker node: raylet, agents, its actor
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    summary = json.loads((out / "summary.json").read_text())

    start_nodes = {a["node"] for a in summary["actors_at_start"]}
    assert len(start_nodes) == 2 and worker_node in start_nodes  # one actor per node
    assert summary["server"]["actor"] is True  # on the head node, which survived
    assert summary["server"]["node_id"] in start_nodes - {worker_node}
    assert summary["feature_transport"] == "object_store"  # nodes may share no disk
    assert {a["node"] for a in summary["actors"]} == start_nodes - {worker_node}
    second = summary["rounds"][1]
    assert second["failed_actors"] >= 1 and second["lost_clients"] == []

    reference_cfg = json.loads(json.dumps(base))
    reference_cfg["federation"]["executor"] = "sequential"
    reference = run_simulation(
        validate_config(reference_cfg), tmp_path / "reference", show_progress=False
    )
    assert summary["final"] == reference["final"]
    with (
        np.load(out / "final_state.npz") as a,
        np.load(tmp_path / "reference" / "final_state.npz") as b,
    ):
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
