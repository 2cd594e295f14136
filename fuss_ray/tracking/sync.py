"""`fuss-ray sync OUT`: send what a run kept under OUT/mlflow_unsent/ once MLflow is back.

A run whose tracking server failed keeps logging to files (see `mlflow_tracker`): the run's
start (experiment, tags, params) if it was never created, every metric with its step and
timestamp, the artifacts' paths and the final status. `sync` replays them into the same
MLflow run, or creates the run when the server was down from the start and remembers
which run that was.

Exactly once, whatever is run twice or interrupted: before sending, sync asks the server
what the run already holds (each metric's history, the artifact names, the params) and
sends only what is missing, so a second sync, or one after a crash half-way, sends
nothing twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuss_ray.errors import SimulationError, UserError
from fuss_ray.io import write_json

UNSENT = "mlflow_unsent"
STATE = "synced.json"
BATCH = 500


@dataclass
class SyncReport:
    """What one sync sent, by kind."""

    uri: str
    run_id: str
    created: bool = False
    params: int = 0
    tags: int = 0
    metrics: int = 0
    artifacts: int = 0
    status: str | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # already on the server

    def line(self) -> str:
        sent = self.params + self.tags + self.metrics + self.artifacts + bool(self.status)
        if not sent and not self.created:
            return f"run {self.run_id} at {self.uri}: already complete, nothing to send"
        what = (
            f"{self.metrics} metric values, {self.params} params, {self.tags} tags, "
            f"{self.artifacts} artifacts" + (f", status {self.status}" if self.status else "")
        )
        return f"run {self.run_id} at {self.uri}{' (created)' if self.created else ''}: {what}"


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash: the rest still counts
    return out


def _config_uri(out_dir: Path) -> str | None:
    for source in (out_dir / "summary.json",):
        try:
            return str(json.loads(source.read_text())["config"]["tracking"]["uri"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def sync_unsent(out_dir: Path, uri: str | None = None) -> SyncReport:
    """Send what `out_dir/mlflow_unsent/` holds and the server lacks; see the module doc."""
    unsent = out_dir / UNSENT
    if not unsent.is_dir():
        raise UserError(f"{out_dir}: nothing to sync (no {UNSENT}/ there)")
    runs = _records(unsent / "run.jsonl")
    state_path = unsent / STATE
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.is_file() else {}
    start = next((r for r in runs if "params" in r), None)
    uri = (
        uri
        or state.get("uri")
        or next((r["uri"] for r in runs if r.get("uri")), None)
        or _config_uri(out_dir)
    )
    if not uri:
        raise UserError(f"{unsent}: no tracking URI recorded; give --tracking-uri")
    run_id = state.get("run_id") or next((r["run_id"] for r in runs if r.get("run_id")), None)
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    try:
        report = _send(client, uri, run_id, start, runs, unsent, state_path)
    except (UserError, SimulationError):
        raise
    except Exception as exc:  # the server is still away, or refuses
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise SimulationError(
            f"sync: MLflow at {uri} failed ({reason}); nothing is lost, run sync again"
        ) from None
    write_json(
        state_path,
        {"uri": uri, "run_id": report.run_id, "synced_at": time.time(), "last": report.line()},
    )
    return report


def _send(
    client: Any,
    uri: str,
    run_id: str | None,
    start: dict[str, Any] | None,
    runs: list[dict[str, Any]],
    unsent: Path,
    state_path: Path,
) -> SyncReport:
    from mlflow.entities import Metric, Param, RunTag

    created = False
    if run_id is None:
        if start is None:
            raise UserError(f"{unsent}: no run id and no record of the run's start")
        exp = client.get_experiment_by_name(start["experiment"])
        exp_id = (
            exp.experiment_id
            if exp is not None
            else client.create_experiment(
                start["experiment"], tags={"mlflow.experimentKind": "custom_model_development"}
            )
        )
        run = client.create_run(
            exp_id,
            start_time=start.get("start_time"),
            tags=start.get("tags", {}),
            run_name=start.get("run_name"),
        )
        run_id = str(run.info.run_id)
        created = True
        # Remember the run at once: a sync cut off from here on must not create another.
        write_json(state_path, {"uri": uri, "run_id": run_id, "synced_at": None})
    report = SyncReport(uri, run_id, created)
    held = client.get_run(run_id)
    if start is not None:
        params = [
            Param(k, str(v)[:6000])
            for k, v in start.get("params", {}).items()
            if k not in held.data.params
        ]
        tags = [
            RunTag(k, str(v))
            for k, v in start.get("tags", {}).items()
            if held.data.tags.get(k) != str(v)
        ]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        if tags:
            client.log_batch(run_id, tags=tags)
        report.params, report.tags = len(params), len(tags)
        if start.get("dataset") and not held.inputs.dataset_inputs:
            from fuss_ray.tracking.mlflow_tracker import DatasetInfo

            client.log_inputs(run_id, datasets=[DatasetInfo(**start["dataset"]).entity()])
    report.metrics = _send_metrics(client, run_id, _records(unsent / "metrics.jsonl"), Metric)
    report.artifacts = _send_artifacts(client, run_id, _records(unsent / "artifacts.jsonl"))
    statuses = [r["status"] for r in runs if r.get("status")]
    if statuses and held.info.status != statuses[-1]:
        client.set_terminated(run_id, statuses[-1])
        report.status = statuses[-1]
    return report


def _send_metrics(client: Any, run_id: str, records: list[dict[str, Any]], metric: Any) -> int:
    wanted = [
        (key, float(value), int(r["timestamp"]), int(r["step"]))
        for r in records
        for key, value in r.items()
        if key not in ("step", "timestamp")
    ]
    have: set[tuple[str, float, int, int]] = set()
    for key in sorted({w[0] for w in wanted}):
        have.update(
            (m.key, float(m.value), int(m.timestamp), int(m.step))
            for m in client.get_metric_history(run_id, key)
        )
    missing = [w for w in dict.fromkeys(wanted) if w not in have]
    for i in range(0, len(missing), BATCH):
        client.log_batch(run_id, metrics=[metric(*w) for w in missing[i : i + BATCH]])
    return len(missing)


def _send_artifacts(client: Any, run_id: str, records: list[dict[str, Any]]) -> int:
    sent = 0
    listed: dict[str | None, set[str]] = {}
    for r in records:
        path, folder = Path(r["path"]), r.get("folder")
        if folder not in listed:
            listed[folder] = {Path(f.path).name for f in client.list_artifacts(run_id, folder)}
        if path.name in listed[folder]:
            continue
        if not path.is_file():
            raise UserError(f"{path}: an artifact to sync is gone from the run folder")
        client.log_artifact(run_id, str(path), folder)
        listed[folder].add(path.name)
        sent += 1
    return sent
