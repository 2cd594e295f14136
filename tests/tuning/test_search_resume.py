"""A search whose process is SIGKILLed in the middle of a trial, then `tune --resume`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ..conftest import kill_when, tiny_config_dict


def _tune(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fuss_ray.cli.main", "tune", str(path), *extra]


@pytest.mark.slow
def test_resume_after_sigkill_mid_trial_finishes_without_repeating(
    cache_dir: Path, tmp_path: Path
) -> None:
    """The search starts its own local Ray; its whole process group is killed as the first
    of two trials finishes. `--resume` must finish both without running the first
    again (Tune, whose state lags, restarts it: the trial replays its stored result)."""
    base = tiny_config_dict(
        cache_dir,
        **{
            "federation.executor": "ray",
            "federation.num_cpus": 0.5,
            "federation.clients_per_actor": 4,
            "train.rounds": 3,
            "train.local_steps": 25,  # seconds per trial, so that the kill lands inside one
        },
    )
    base["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "resume"}
    doc = {
        "base": base,
        "search": {
            "name": "cut",
            "num_samples": 2,
            "max_concurrent": 1,
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "out_dir": str(tmp_path / "out"),
            "trial_cpus": 0.5,
            "scheduler": {"kind": "none"},
            "space": {"partition.alpha": {"type": "loguniform", "low": 0.1, "high": 1.0}},
        },
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        _tune(path),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    trials = tmp_path / "out" / "cut" / "trials"
    # The moment the first trial has written its results, before Tune has heard that it
    # ended (so the resumed Tune believes it still runs and starts it again).
    kill_when(proc, lambda: any(trials.glob("*/summary.json")), 600, "no trial finished", 0.02)
    (first,) = trials.glob("*/summary.json")
    done = [first.parent.name]
    first_summary = first.stat().st_mtime_ns
    assert len(list(trials.glob("*/summary.json"))) == 1

    resumed = subprocess.run(
        _tune(path, "--resume"), env=env, capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 2 and summary["errored"] == 0
    ids = [t["trial_id"] for t in summary["trial_results"]]
    assert len(set(ids)) == 2 and all(t["rounds"] == 3 for t in summary["trial_results"])
    assert sorted(p.parent.name for p in trials.glob("*/summary.json")) == sorted(ids)
    # The trial that had finished was not run again: its results are untouched and it has
    # exactly one MLflow run.
    assert (trials / done[0] / "summary.json").stat().st_mtime_ns == first_summary
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("resume")
    names = [r.info.run_name for r in client.search_runs([exp.experiment_id])]
    assert sum(1 for n in names if n.endswith(f"trial {done[0]}")) == 1
    finished = [
        r
        for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
        if "trial" in r.info.run_name
    ]
    assert sorted(r.info.run_name.rsplit(" ", 1)[1] for r in finished) == sorted(ids)
