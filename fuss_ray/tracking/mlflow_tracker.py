"""MLflow logging for one simulation run, through `MlflowClient` (no global fluent state).

Runs are hours long and tracking servers go away: a failure to log never stops a run.
Whatever could not be sent is kept under `OUT/mlflow_unsent/` (params, tags, metrics as
JSON lines, and the artifact list), and the run says so once on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fuss_ray.config import DEFAULT_TRACKING_URI, RunConfig
from fuss_ray.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_URI = DEFAULT_TRACKING_URI


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> dotted keys with string values, as MLflow params."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return out


def git_commit() -> str | None:
    """The commit of the fuss-ray checkout, when it is one."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_tags(config: RunConfig, num_clients: int) -> dict[str, str]:
    """The tags users filter and group by in the MLflow UI."""
    tags = {
        "strategy": str(config.federation.strategy["name"]),
        "dataset": config.data.dataset,
        "partition": config.partition.kind,
        "alpha": str(config.partition.alpha),
        "num_clients": str(num_clients),
        "seed": str(config.seed),
        "backbone": config.features.backbone,
    }
    tags["mlflow.source.name"] = "fuss-ray"  # the UI's Source column
    tags["mlflow.source.type"] = "LOCAL"
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    return tags


def default_run_name(config: RunConfig) -> str:
    """What a run is, at a glance: its strategy, its heterogeneity and its seed."""
    part = config.partition
    skew = f" α={part.alpha:g}" if part.kind in ("dirichlet", "quantity") else ""
    return f"{config.federation.strategy['name']} · {part.kind}{skew} · seed {config.seed}"


@dataclass(frozen=True)
class DatasetInfo:
    """The data a run trained on, as an MLflow dataset input (the runs table's Dataset).

    `digest` changes with anything that changes what clients hold: the images, the
    validation carve-out and the partition.
    """

    name: str
    digest: str
    source: str
    source_type: str = "local"
    profile: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def entity(self) -> Any:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            self.name, self.digest, self.source_type, self.source, profile=json.dumps(self.profile)
        )
        return DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise first use of a SQLite store across processes.

    MLflow creates and migrates a new SQLite database on first touch; two runs started at
    once (parallel seeds, concurrent Tune trials) would both migrate it and one would fail.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock"):
        yield


class Tracker(Protocol):
    run_id: str | None

    def start(
        self, config: RunConfig, num_clients: int, dataset: DatasetInfo | None = None
    ) -> None: ...
    def resume(self, run_id: str | None, config: RunConfig, num_clients: int) -> set[int]: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, folder: str | None = None) -> None: ...
    def finish(self, status: str) -> None: ...


class NullTracker:
    """`tracking: off`."""

    run_id: str | None = None

    def start(
        self, config: RunConfig, num_clients: int, dataset: DatasetInfo | None = None
    ) -> None:
        return None

    def resume(self, run_id: str | None, config: RunConfig, num_clients: int) -> set[int]:
        return set()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        return None

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        return None

    def finish(self, status: str) -> None:
        return None


class MlflowTracker:
    """One MLflow run per simulation; falls back to local files when the server fails."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        out_dir: Path,
        parent_run_id: str | None = None,
        run_name: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.unsent_dir = out_dir / "mlflow_unsent"
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        self.run_id: str | None = None
        self.failed: str | None = None
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_s)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        from mlflow import MlflowClient

        try:
            with store_lock(uri):  # a new SQLite store is created and migrated right here
                self.client = MlflowClient(tracking_uri=uri)
                if uri.startswith("sqlite:///"):
                    self.client.search_experiments(max_results=1)
        except Exception as exc:
            self._fail("opening the store", exc)

    def _fail(self, what: str, exc: BaseException) -> None:
        if self.failed is None:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            log.warning(
                "MLflow at %s failed during %s (%s); the rest is kept in %s (send it later "
                "with: fuss-ray sync %s)",
                self.uri,
                what,
                reason,
                self.unsent_dir,
                self.unsent_dir.parent,
            )
            self.failed = what
        self.unsent_dir.mkdir(parents=True, exist_ok=True)

    def _keep(self, name: str, record: dict[str, Any]) -> None:
        with (self.unsent_dir / name).open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _experiment_id(self) -> str:
        """Get or create the experiment; another run may create it at the same moment."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            # Open on the training-runs table, not the GenAI overview.
            tags = {"mlflow.experimentKind": "custom_model_development"}
            return str(self.client.create_experiment(self.experiment, tags=tags))
        except Exception:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def start(
        self, config: RunConfig, num_clients: int, dataset: DatasetInfo | None = None
    ) -> None:
        from mlflow.entities import Param

        params = flatten(config.to_dict())
        tags = run_tags(config, num_clients)
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        started = int(time.time() * 1000)
        try:
            if self.failed is not None:
                raise RuntimeError(f"the store failed while {self.failed}")
            with store_lock(self.uri):
                exp_id = self._experiment_id()
            run = self.client.create_run(
                exp_id, start_time=started, tags=tags, run_name=self.run_name
            )
            self.run_id = run.info.run_id
            items = [Param(k, v[:6000]) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])
            if dataset is not None:
                self.client.log_inputs(self.run_id, datasets=[dataset.entity()])
        except Exception as exc:  # any transport or server error
            self._fail("start", exc)
            self._keep(
                "run.jsonl",
                {
                    "uri": self.uri,
                    "experiment": self.experiment,
                    "run_name": self.run_name,
                    "start_time": started,
                    "tags": tags,
                    "params": params,
                    "dataset": dataset.record() if dataset is not None else None,
                    "run_id": self.run_id,
                },
            )

    def resume(self, run_id: str | None, config: RunConfig, num_clients: int) -> set[int]:
        """Reopen the run a killed simulation was logging to; the rounds it already holds.

        Rounds are logged before their checkpoint is written, so after a kill between the
        two the resumed run recomputes a round that MLflow already has; knowing the logged
        steps keeps each round logged exactly once.
        """
        if run_id is None or self.failed is not None:
            self.start(config, num_clients)
            return set()
        try:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return {m.step for m in self.client.get_metric_history(run_id, "miou")}
        except Exception as exc:
            self._fail("resume", exc)
            self.run_id = run_id
            self._keep("run.jsonl", {"uri": self.uri, "run_id": run_id, "status": "RUNNING"})
            return set()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if self.failed is None and self.run_id is not None:
            try:
                self.client.log_batch(
                    self.run_id,
                    metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
                )
                return
            except Exception as exc:
                self._fail(f"round {step}", exc)
        self._keep("metrics.jsonl", {"step": step, "timestamp": now, **metrics})

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.failed is None and self.run_id is not None:
            try:
                self.client.log_artifact(self.run_id, str(path), folder)
                return
            except Exception as exc:
                self._fail(f"upload of {path.name}", exc)
        self._keep("artifacts.jsonl", {"path": str(path.resolve()), "folder": folder})

    def finish(self, status: str) -> None:
        if self.failed is None and self.run_id is not None:
            try:
                self.client.set_terminated(self.run_id, status)
                return
            except Exception as exc:
                self._fail("finish", exc)
        self._keep("run.jsonl", {"uri": self.uri, "status": status, "run_id": self.run_id})


def resolve_uri(config: RunConfig) -> str:
    return config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def make_tracker(
    config: RunConfig,
    out_dir: Path,
    parent_run_id: str | None = None,
    run_name: str | None = None,
) -> Tracker:
    """The tracker the config asks for."""
    if not config.tracking.enabled:
        return NullTracker()
    uri = resolve_uri(config)
    if "://" not in uri and not uri.startswith("databricks"):
        raise UserError(
            f"tracking.uri: '{uri}' is not a URI (e.g. sqlite:///mlflow.db or "
            "http://127.0.0.1:5000)"
        )
    return MlflowTracker(
        uri,
        config.tracking.experiment or config.name,
        out_dir,
        parent_run_id,
        run_name or default_run_name(config),
        config.tracking.timeout_s,
    )


def open_parent_run(
    config: RunConfig, out: Path, name: str, kind: str, state: Path, resume: bool
) -> str | None:
    """Create (or, resumed, reuse) the MLflow run that a search's or study's runs nest under.

    Its id is kept in `state` (a JSON file in the output folder), so that a resumed search
    or study goes on in the same parent run. Tagged `strategy: KIND` and `fuss.KIND: NAME`.
    With tracking off there is no parent run, but `state` is written all the same: it is
    what marks the folder as the study's, which `--resume` looks for.
    """
    if resume and state.is_file():
        return json.loads(state.read_text()).get("parent_run_id")  # type: ignore[no-any-return]
    from fuss_ray.io import write_json

    if not config.tracking.enabled:
        write_json(state, {"parent_run_id": None, "name": name})
        return None

    tracker = make_tracker(config, out, run_name=name)
    tracker.start(config, config.partition.num_clients)
    if tracker.run_id is not None:
        from mlflow import MlflowClient

        client = MlflowClient(resolve_uri(config))
        client.set_tag(tracker.run_id, f"fuss.{kind}", name)
        client.set_tag(tracker.run_id, "strategy", kind)
    write_json(state, {"parent_run_id": tracker.run_id, "name": name})
    return tracker.run_id


def close_parent_run(
    config: RunConfig, parent: str | None, metrics: dict[str, float | None], files: list[Path]
) -> None:
    """Give the parent run its results and files, and mark it finished."""
    if parent is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient(resolve_uri(config))
    try:
        for key, value in metrics.items():
            if value is not None:
                client.log_metric(parent, key, float(value))
        for path in files:
            client.log_artifact(parent, str(path))
        client.set_terminated(parent, "FINISHED")
    except Exception as exc:  # the work itself succeeded; say so and keep going
        log.warning("could not close the MLflow parent run: %s", exc)
