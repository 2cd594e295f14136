"""Runs started at once on a brand-new SQLite store must all land (MLflow migrates on first use)."""

import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

SCRIPT = """
import sys
from pathlib import Path
from fuss_ray.config import validate_config
from fuss_ray.tracking import make_tracker
cfg = validate_config({"tracking": {"uri": sys.argv[1], "experiment": "race"}})
t = make_tracker(cfg, Path(sys.argv[2]))
t.start(cfg, 1)
t.log_metrics({"miou": 1.0}, step=1)
t.finish("FINISHED")
assert t.run_id is not None and not Path(sys.argv[2], "mlflow_unsent").exists()
"""


def test_three_runs_start_together_on_a_new_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, uri, str(tmp_path / f"out{i}")],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
    exp = MlflowClient(uri).get_experiment_by_name("race")
    assert len(MlflowClient(uri).search_runs([exp.experiment_id])) == 3
