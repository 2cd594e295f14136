"""A process killed while it publishes a result leaves the old file or none, never a torn one.

Each case runs `fuss-ray run` in a child process that SIGKILLs itself at the moment it
renames one particular file into place: the temporary copy is complete and the target is
about to change. What the folder holds afterwards must be the previous version (or
nothing), readable, and a resume from it must finish as if nothing had happened.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from fuss_ray.federation.checkpoint import latest_checkpoint

from .conftest import tiny_config_dict

# The child: os.replace / os.rename kill the process at the Nth rename onto NAME
# (argument "NAME" or "NAME#N").
KILL_AT_RENAME = """
import os, signal, sys
target, _, nth = sys.argv[1].partition("#")
seen = [0]

def guard(real):
    def call(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == target:
            seen[0] += 1
            if seen[0] == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    return call

os.replace = guard(os.replace)
os.rename = guard(os.rename)
from fuss_ray.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def _run(
    tmp_path: Path, cfg: dict[str, Any], out: Path, kill_at: str | None, *extra: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["run", str(path), "--out", str(out), "--quiet", *extra]
    return subprocess.run(
        [sys.executable, "-c", KILL_AT_RENAME, kill_at or "-", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _cfg(cache_dir: Path, **extra: Any) -> dict[str, Any]:
    return tiny_config_dict(
        cache_dir,
        **{"tracking": False, "federation.strategy": "moon", "train.rounds": 3, **extra},
    )


def _killed(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_a_kill_while_publishing_the_summary_leaves_the_old_one(
    cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    _killed(_run(tmp_path, _cfg(cache_dir), out, "summary.json"))
    assert not (out / "summary.json").exists()  # none, rather than half of one
    assert _run(tmp_path, _cfg(cache_dir), out, None).returncode == 0
    old = (out / "summary.json").read_bytes()
    _killed(_run(tmp_path, _cfg(cache_dir, seed=1), out, "summary.json"))
    assert (out / "summary.json").read_bytes() == old
    assert json.loads(old)["seed"] == 0
    # The next run sweeps what the killed one left under temporary names.
    assert _run(tmp_path, _cfg(cache_dir, seed=1), out, None).returncode == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 1
    assert not list(out.glob(".*.tmp"))


def test_a_kill_while_publishing_the_manifest_leaves_the_old_one(
    cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, _cfg(cache_dir), out, None).returncode == 0
    old = (out / "partition.parquet").read_bytes()
    _killed(_run(tmp_path, _cfg(cache_dir, **{"partition.alpha": 5.0}), out, "partition.parquet"))
    assert (out / "partition.parquet").read_bytes() == old
    assert pq.read_table(out / "partition.parquet").num_rows == 29  # whole and readable


@pytest.mark.parametrize("kill_at", ["round-000002", "LATEST#2"])
def test_a_kill_while_publishing_a_checkpoint_keeps_the_previous_one(
    kill_at: str, cache_dir: Path, tmp_path: Path
) -> None:
    """Killed as round 2's checkpoint is renamed into place, or as LATEST is repointed to it."""
    whole = tmp_path / "whole"
    assert _run(tmp_path, _cfg(cache_dir), whole, None).returncode == 0
    out = tmp_path / "out"
    _killed(_run(tmp_path, _cfg(cache_dir), out, kill_at))
    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt is not None and ckpt.round == 1  # whole, and the one LATEST names
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "round-000001"
    assert ckpt.server_tree()["global"]  # its arrays load
    done = _run(tmp_path, _cfg(cache_dir), out, None, "--resume", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((out / "summary.json").read_text())
    reference = json.loads((whole / "summary.json").read_text())
    assert resumed["resumed_from_round"] == 1
    assert resumed["final"] == reference["final"]
    with np.load(out / "final_state.npz") as a, np.load(whole / "final_state.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files)
    assert not list((out / "checkpoints").glob(".round-*"))  # the half-built one is swept
