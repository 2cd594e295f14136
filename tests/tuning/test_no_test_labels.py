"""A search never reads the test split's labels before it ends.

The demo search runs as a user would (`fuss-ray tune`, joining a running Ray), with every
process of its job (driver, Tune trials, actors) logging each read of a test mask: a
`sitecustomize` on the job's PYTHONPATH wraps the synthetic dataset's `mask`. Every read must
come after the last trial has ended, from the one run of the chosen config on the test
split; and there must be such reads, or the logging proves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ..conftest import job_env

ROOT = Path(__file__).resolve().parents[2]

SITECUSTOMIZE = """
import json, os, time
try:
    from fuss_ray.data import synthetic
except Exception:  # not every process imports fuss-ray
    synthetic = None
if synthetic is not None:
    _mask = synthetic.SyntheticScenes.mask

    def mask(self, index):
        if self._split_key == 1:  # the test split
            with open(os.environ["FUSS_TEST_MASK_LOG"], "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "t": time.time()}) + "\\n")
        return _mask(self, index)

    synthetic.SyntheticScenes.mask = mask
"""


@pytest.mark.slow
def test_the_demo_search_reads_no_test_mask_before_it_ends(
    tmp_path: Path, ray_join: dict[str, str]
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "test-mask-reads.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    # The hook in every process of the search's Ray job (driver, trials, actors), on the
    # session's Ray; other jobs' workers never load it.
    env.update(job_env(ray_join, PYTHONPATH=str(hook), FUSS_TEST_MASK_LOG=str(log)))
    env["HF_HUB_OFFLINE"] = "1"
    sets = [
        "search.num_samples=2",
        "train.rounds=2",
        "data.num_images=40",
        "data.num_eval_images=8",
        "data.image_size=112",  # 14 x 14 feature maps: what is read when does not change
        "features.input_size=112",
        "partition.num_clients=4",
        "features.cache_dir=cache",  # fresh: nothing extracted before the search
    ]
    argv = [
        sys.executable,
        "-m",
        "fuss_ray.cli.main",
        "tune",
        str(ROOT / "configs/searches/demo.yaml"),
    ]
    for s in sets:
        argv += ["--set", s]
    started = time.time()
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 2 and summary["errored"] == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fuss-search-demo")
    nested = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("mlflow.parentRunId") == summary["parent_run_id"]
    ]
    trials = [r for r in nested if " trial " in r.info.run_name]
    assert len(trials) == 2
    search_ended = max(r.info.end_time for r in trials) / 1000
    reads = [json.loads(line) for line in log.read_text().splitlines()]
    assert reads, "the test split was never read, even by the final test run"
    early = [r for r in reads if r["t"] < search_ended]
    assert early == [], f"{len(early)} test-mask reads before the search ended"
    assert all(r["t"] > started for r in reads)
    assert summary["best"]["test"] is not None
