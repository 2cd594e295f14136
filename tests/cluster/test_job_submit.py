"""`ray job submit -- fuss-ray run ...` against a running cluster, as docs/cluster.md shows.

A one-node loopback cluster with its job server (the dashboard) is started with
`ray start`; the job's entrypoint is the `fuss-ray` command, which joins the cluster
through the `RAY_ADDRESS` that Ray gives it and runs its rounds in a server actor.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ..conftest import free_port, tiny_config_dict
from .test_two_nodes import ENV, RAY, _stop

BIN = str(Path(sys.executable).parent)


@pytest.mark.ray
def test_a_job_submitted_to_the_cluster_runs_the_simulation(
    cache_dir: Path, tmp_path: Path
) -> None:
    port, dashboard = free_port(), free_port()
    env = {**ENV, "PATH": f"{BIN}{os.pathsep}{ENV.get('PATH', '')}"}  # the job finds fuss-ray
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--disable-usage-stats",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            # Jobs go through the head's dashboard agent; its default port (52365) is
            # taken by the agent of the tests' own Ray when both run at once.
            f"--dashboard-agent-listen-port={free_port()}",
        ],
        env=env,
        start_new_session=True,
        stdout=(tmp_path / "head.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    cfg = tiny_config_dict(
        cache_dir,
        **{
            "tracking": False,
            "train.rounds": 1,
            "federation.executor": "ray",
            "federation.num_cpus": 0.5,
        },
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 180
        while True:  # the job server answers once the dashboard is up
            listed = subprocess.run(
                [RAY, "job", "list", "--address", address],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if listed.returncode == 0:
                break
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.time() < deadline, "the job server did not come up in 180 s"
            time.sleep(1)
        # As docs/cluster.md writes it, with absolute paths (the job runs elsewhere). The
        # job server answers before the head's agent takes jobs ("No available agent"):
        # nothing ran then, so the submission is repeated.
        submit = [RAY, "job", "submit", "--address", address, "--"]
        while True:
            job = subprocess.run(
                [*submit, "fuss-ray", "run", str(path), "--out", str(out), "--quiet"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if "No available agent" not in job.stdout + job.stderr:
                break
            assert time.time() < deadline, "the head's job agent did not come up in 180 s"
            time.sleep(2)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout
    finally:
        _stop(head)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rounds"]) == 1 and summary["final"] is not None
    assert summary["server"]["actor"] is True and summary["server"]["node_id"]
    assert all(a["node"] == summary["server"]["node_id"] for a in summary["actors"])
