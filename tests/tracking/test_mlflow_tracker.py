"""Runs land in MLflow with everything needed to compare them, or are kept locally."""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fuss_ray.config import validate_config
from fuss_ray.simulation import run_simulation
from fuss_ray.tracking.mlflow_tracker import flatten, open_parent_run

from ..conftest import tiny_config_dict

ARTIFACTS = {
    "config.yaml",
    "partition.parquet",
    "convergence.png",
    "overlays.png",
    "clients.parquet",
    "final_state.npz",
    "summary.json",
}


def _check_run(client: MlflowClient, run_id: str, tmp_path: Path) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["strategy"] == "fuss-maximin" and tags["alpha"] == "0.5"
    assert tags["partition"] == "dirichlet" and tags["num_clients"] == "4"
    assert tags["seed"] == "0" and tags["dataset"] == "synthetic"
    assert run.data.params["partition.alpha"] == "0.5"
    assert run.data.params["federation.strategy.name"] == "fuss-maximin"
    # Named by what it is, with its data as a dataset input and a source, for the runs table.
    assert run.info.run_name == "fuss-maximin · dirichlet α=0.5 · seed 0"
    (given,) = run.inputs.dataset_inputs
    assert given.dataset.name == "synthetic · dirichlet α=0.5 · 4 clients"
    assert len(given.dataset.digest) == 16 and given.dataset.source == "synthetic (seed 0)"
    assert json.loads(given.dataset.profile)["validation_images"] == 3
    assert tags["mlflow.source.name"] == "fuss-ray"
    history = client.get_metric_history(run_id, "miou")
    assert [m.step for m in history] == [1, 2]
    for name in (
        "pixel_acc",
        "mean_loss",
        "client_loss_p50",
        "bytes_sent",
        "bytes_received",
        "seconds",
        "final_miou",
    ):
        assert name in run.data.metrics, name
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names >= ARTIFACTS
    local = client.download_artifacts(run_id, "convergence.png", str(tmp_path))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_logs_to_sqlite_store(cache_dir: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = validate_config(tiny_config_dict(cache_dir, tracking={"uri": uri, "experiment": "unit"}))
    summary = run_simulation(cfg, tmp_path / "out", show_progress=False)
    _check_run(MlflowClient(uri), summary["mlflow_run_id"], tmp_path)


def test_logs_over_http_to_a_real_server(
    cache_dir: Path, tmp_path: Path, mlflow_server: str
) -> None:
    cfg = validate_config(
        tiny_config_dict(cache_dir, tracking={"uri": mlflow_server, "experiment": "http"})
    )
    summary = run_simulation(cfg, tmp_path / "out", show_progress=False)
    _check_run(MlflowClient(mlflow_server), summary["mlflow_run_id"], tmp_path)


def test_unreachable_server_keeps_the_run(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ..conftest import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = validate_config(tiny_config_dict(cache_dir, tracking={"uri": uri, "timeout_s": 2}))
    summary = run_simulation(cfg, tmp_path / "out", show_progress=False)
    assert len(summary["rounds"]) == 2  # the run finished
    err = capsys.readouterr().err
    assert err.count("fuss-ray: warning: MLflow") == 1
    unsent = tmp_path / "out" / "mlflow_unsent"
    assert (unsent / "run.jsonl").is_file()
    assert len((unsent / "metrics.jsonl").read_text().splitlines()) == 3  # 2 rounds + final
    assert "convergence.png" in (unsent / "artifacts.jsonl").read_text()


def test_tracking_off_and_flatten(cache_dir: Path) -> None:
    cfg = validate_config({**tiny_config_dict(cache_dir), "tracking": False})
    assert not cfg.tracking.enabled
    assert flatten({"a": {"b": 1, "c": [1, 2]}}) == {"a.b": "1", "a.c": "[1, 2]"}


def test_tracking_off_still_marks_the_folder_so_resume_finds_it(
    cache_dir: Path, tmp_path: Path
) -> None:
    """A study with tracking off has no parent run, but `--resume` looks for its state
    file: without one, such a study could never be resumed."""
    cfg = validate_config({**tiny_config_dict(cache_dir), "tracking": False})
    state = tmp_path / "study_state.json"
    assert open_parent_run(cfg, tmp_path, "s", "study", state, resume=False) is None
    assert json.loads(state.read_text()) == {"parent_run_id": None, "name": "s"}
    assert open_parent_run(cfg, tmp_path, "s", "study", state, resume=True) is None
