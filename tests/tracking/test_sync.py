"""The tracking server dies mid-run: the run finishes, and `fuss-ray sync` sends the rest,
into the same run, exactly once."""

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from fuss_ray.cli.main import main
from fuss_ray.config import validate_config
from fuss_ray.simulation import run_simulation

from ..conftest import free_port, start_mlflow_server, stop_mlflow_server, tiny_config_dict

ARTIFACTS = {"config.yaml", "partition.parquet", "convergence.png", "summary.json"}


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_server_killed_mid_run_then_sync_sends_the_rest_once(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path / "server", port)
    tree = tiny_config_dict(
        cache_dir,
        **{"train.rounds": 3, "tracking": {"uri": uri, "experiment": "sync", "timeout_s": 3}},
    )

    def kill_after_round_1(summary: dict[str, Any]) -> None:
        if summary["round"] == 1:
            stop_mlflow_server(server, 9)  # SIGKILL: the server is gone, mid-run

    out = tmp_path / "out"
    try:
        summary = run_simulation(
            validate_config(tree), out, show_progress=False, on_round=kill_after_round_1
        )
        assert len(summary["rounds"]) == 3  # the run finished
        assert "fuss-ray: warning: MLflow" in capsys.readouterr().err
        unsent = out / "mlflow_unsent"
        assert {p.name for p in unsent.iterdir()} >= {"metrics.jsonl", "artifacts.jsonl"}
        assert main(["sync", str(out)]) == 1  # still down: one line, nothing lost
        assert "nothing is lost" in capsys.readouterr().err

        server = start_mlflow_server(tmp_path / "server", port)  # back, same store
        client = MlflowClient(uri)
        run_id = summary["mlflow_run_id"]
        assert client.get_run(run_id).info.status == "RUNNING"
        assert [s for s, _ in _history(client, run_id, "miou")] == [1]
        assert main(["sync", str(out)]) == 0
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert last.startswith(f"run {run_id} at {uri}: ") and "status FINISHED" in last
        run = client.get_run(run_id)  # the same run, now whole
        assert run.info.status == "FINISHED"
        miou = _history(client, run_id, "miou")
        assert miou == [(r["round"], r["miou"]) for r in summary["rounds"]]
        assert _history(client, run_id, "final_miou") == [(3, summary["final"]["miou"])]
        assert {a.path for a in client.list_artifacts(run_id)} >= ARTIFACTS
        # Twice: nothing is sent twice.
        assert main(["sync", str(out)]) == 0
        assert "nothing to send" in capsys.readouterr().out
        assert _history(client, run_id, "miou") == miou
        assert len(client.get_metric_history(run_id, "mean_loss")) == 3
    finally:
        stop_mlflow_server(server)


def test_sync_creates_the_run_a_dead_server_never_saw(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"  # nothing listens there yet
    tree = tiny_config_dict(cache_dir, tracking={"uri": uri, "experiment": "late", "timeout_s": 2})
    out = tmp_path / "out"
    summary = run_simulation(validate_config(tree), out, show_progress=False)
    assert summary["mlflow_run_id"] is None
    server = start_mlflow_server(tmp_path / "server", port)
    try:
        assert main(["sync", str(out)]) == 0
        line = capsys.readouterr().out
        assert "(created)" in line
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("late").experiment_id])
        assert run.info.status == "FINISHED" and run.data.tags["strategy"] == "fuss-maximin"
        assert run.data.params["partition.alpha"] == "0.5"
        assert run.info.run_name == "fuss-maximin · dirichlet α=0.5 · seed 0"
        (given,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert given.dataset.name == "synthetic · dirichlet α=0.5 · 4 clients"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "miou")] == [1, 2]
        assert main(["sync", str(out)]) == 0  # the same run again, not a second one
        assert "nothing to send" in capsys.readouterr().out
        assert len(client.search_runs([run.info.experiment_id])) == 1
    finally:
        stop_mlflow_server(server)
