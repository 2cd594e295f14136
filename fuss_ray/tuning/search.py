"""`fuss-ray tune`: Optuna TPE on Ray Tune, ASHA per round, one MLflow parent run per search.

Each trial is a full simulation with its own client actors; the trial's placement group is
sized from its config (one bundle for the trial's server, one per client actor), and the
actors are placed into those bundles, so concurrent trials can never starve each other.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fuss_ray.config import RunConfig, apply_override, load_config, validate_config
from fuss_ray.errors import UserError
from fuss_ray.io import atomic_path, write_json
from fuss_ray.tuning.space import DefineByRun, ParamSpec, example_values, order_space


class SchedulerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "fuss-search"
    metric: Literal["miou", "pixel_acc"] = "miou"
    num_samples: int = Field(8, ge=1, le=100_000)
    max_concurrent: int = Field(2, ge=1, le=10_000)
    seed: int = Field(0, ge=0)
    storage: str = Field("sqlite:///optuna.db", description="Optuna RDB storage URL")
    out_dir: Path = Path("runs/search")
    trial_cpus: float = Field(0.5, gt=0.0, le=1024.0, description="the trial's own server")
    scheduler: SchedulerSpec = SchedulerSpec()
    space: dict[str, ParamSpec]

    @model_validator(mode="after")
    def _order(self) -> SearchSettings:
        self.__dict__["space"] = order_space(self.space)
        return self


class SearchSpec(BaseModel):
    """A search file: a base run config, fixed overrides, and the search."""

    model_config = ConfigDict(extra="forbid")
    base: dict[str, Any]
    search: SearchSettings


def _error_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{source}: {loc}: {first['msg'].removeprefix('Value error, ')}"


def load_search(path: Path, overrides: list[str] | None = None) -> SearchSpec:
    """Read a search file; `base` may name a run config file relative to it."""
    if not path.is_file():
        raise UserError(f"{path}: search file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{path}: not valid YAML") from None
    if not isinstance(raw, dict) or "search" not in raw:
        raise UserError(f"{path}: expected a 'search' section (and optionally 'base')")
    base = raw.get("base", {})
    if isinstance(base, str):
        base_path = (path.parent / base).resolve()
        base = load_config(base_path).to_dict()
    tree = {"base": base, "search": raw["search"]}
    for key, value in (raw.get("overrides") or {}).items():
        apply_override(tree["base"], f"{key}={json.dumps(value)}")
    for item in overrides or []:
        apply_override(tree["base"], item)
    try:
        spec = SearchSpec.model_validate(tree)
    except ValidationError as err:
        raise UserError(_error_line(err, str(path))) from None
    validate_config(spec.base, f"{path}: base")
    for values in example_values(spec.search.space):
        trial_config(spec.base, values, source=f"{path}: search.space")
    return spec


def trial_config(base: dict[str, Any], values: dict[str, Any], source: str = "trial") -> RunConfig:
    """The run config of one trial: base plus the sampled values at their dotted keys."""
    tree = json.loads(json.dumps(base))
    for key, value in values.items():
        if key.startswith("_"):
            continue
        apply_override(tree, f"{key}={json.dumps(value)}")
    return validate_config(tree, source)


def trial_bundles(config: RunConfig, server_cpus: float) -> list[dict[str, float]]:
    """The placement-group bundles a trial needs: its server, then one per client actor."""
    fed = config.federation
    clients = (
        1 if config.federation.strategy["name"] == "centralized" else config.partition.num_clients
    )
    actors = math.ceil(clients / fed.clients_per_actor) if fed.executor == "ray" else 0
    from fuss_ray.federation.executor import actor_bundle

    actor = actor_bundle(fed) or {"CPU": fed.num_cpus}
    return [{"CPU": server_cpus}] + [dict(actor) for _ in range(actors)]


def _trainable(params: dict[str, Any]) -> None:
    """One trial: a full simulation that reports after every round."""
    from ray import tune

    config = trial_config(params["_base"], params)
    trial_id = tune.get_context().get_trial_id()
    out = Path(params["_out_dir"]) / "trials" / str(trial_id)

    def report(round_summary: dict[str, Any]) -> None:
        tune.report(
            {
                "miou": round_summary["miou"],
                "pixel_acc": round_summary["pixel_acc"],
                "round": round_summary["round"],
            }
        )

    from fuss_ray.simulation import run_simulation

    run_simulation(
        config,
        out,
        show_progress=False,
        on_round=report,
        parent_run_id=params["_parent_run_id"],
        run_name=f"{config.federation.strategy['name']} trial {trial_id}",
    )


def _parent_run(spec: SearchSpec, out: Path, resume: bool) -> str | None:
    """Create (or, on resume, reuse) the search's MLflow parent run."""
    base = validate_config(spec.base)
    if not base.tracking.enabled:
        return None
    state = out / "search_state.json"
    if resume and state.is_file():
        return json.loads(state.read_text()).get("parent_run_id")  # type: ignore[no-any-return]
    from fuss_ray.tracking.mlflow_tracker import make_tracker

    tracker = make_tracker(base, out, run_name=spec.search.name)
    tracker.start(base, base.partition.num_clients)
    if tracker.run_id is not None:
        from mlflow import MlflowClient

        from fuss_ray.tracking.mlflow_tracker import resolve_uri

        client = MlflowClient(resolve_uri(base))
        client.set_tag(tracker.run_id, "fuss.search", spec.search.name)
        client.set_tag(tracker.run_id, "strategy", "search")
    write_json(state, {"parent_run_id": tracker.run_id, "name": spec.search.name})
    return tracker.run_id


def run_search(
    spec: SearchSpec, resume: bool = False, address: str | None = None
) -> dict[str, Any]:
    """Run (or resume) the search; write the best trial's config as a ready-to-run YAML."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    settings = spec.search
    out = settings.out_dir.resolve() / settings.name
    tune_dir = out / "tune"
    if resume and not (tune_dir / settings.name).is_dir():
        raise UserError(f"--resume: no search to resume at {tune_dir / settings.name}")
    if not resume and (tune_dir / settings.name).exists():
        raise UserError(
            f"search.name: {out} already holds a search named '{settings.name}'; "
            "use --resume to continue it or choose another name"
        )
    out.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(
            address=address or "local",  # never a stray cluster found on this machine
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    parent = _parent_run(spec, out, resume)
    rounds = validate_config(spec.base).train.rounds

    def resources(params: dict[str, Any]) -> tune.PlacementGroupFactory:
        bundles = trial_bundles(trial_config(params["_base"], params), settings.trial_cpus)
        return tune.PlacementGroupFactory(bundles, strategy="PACK")

    trainable = tune.with_resources(_trainable, resources)
    if resume:
        tuner = tune.Tuner.restore(
            str(tune_dir / settings.name), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        storage = optuna.storages.RDBStorage(settings.storage)
        searcher = OptunaSearch(
            space=DefineByRun(settings.space),
            metric=settings.metric,
            mode="max",
            sampler=optuna.samplers.TPESampler(seed=settings.seed),
            study_name=settings.name,
            storage=storage,
        )
        scheduler = None
        if settings.scheduler.kind == "asha":
            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                max_t=rounds,
                grace_period=min(settings.scheduler.grace_period, rounds),
                reduction_factor=settings.scheduler.reduction_factor,
            )
        tuner = tune.Tuner(
            trainable,
            param_space={"_base": spec.base, "_out_dir": str(out), "_parent_run_id": parent},
            tune_config=tune.TuneConfig(
                search_alg=tune.search.ConcurrencyLimiter(searcher, settings.max_concurrent),
                scheduler=scheduler,
                metric=settings.metric,
                mode="max",
                num_samples=settings.num_samples,
            ),
            run_config=tune.RunConfig(name=settings.name, storage_path=str(tune_dir), verbose=0),
        )
    results = tuner.fit()
    if results.num_errors == len(results):
        raise UserError(
            f"search: all {len(results)} trials failed; their errors are under "
            f"{tune_dir / settings.name}"
        )
    best = results.get_best_result(metric=settings.metric, mode="max", scope="all")
    best_metrics = best.metrics or {}
    chosen = {k: v for k, v in (best.config or {}).items() if not k.startswith("_")}
    best_cfg = trial_config(spec.base, chosen)
    best_path = out / "best_config.yaml"
    with atomic_path(best_path) as tmp:
        tmp.write_text(
            f"# Best trial of search '{settings.name}' ({settings.metric} "
            f"{best_metrics.get(settings.metric, float('nan')):.2f}); run it with\n"
            f"#   fuss-ray run {best_path}\n" + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False)
        )
    summary = {
        "name": settings.name,
        "trials": len(results),
        "errored": results.num_errors,
        "best": {"params": chosen, settings.metric: best_metrics.get(settings.metric)},
        "best_config": str(best_path),
        "parent_run_id": parent,
    }
    write_json(out / "search_summary.json", summary)
    _close_parent(spec, parent, best_metrics.get(settings.metric), best_path)
    return summary


def _close_parent(
    spec: SearchSpec, parent: str | None, best: float | None, best_path: Path
) -> None:
    """Give the parent run the best score and config, and mark it finished."""
    if parent is None:
        return
    from mlflow import MlflowClient

    from fuss_ray.tracking.mlflow_tracker import resolve_uri

    client = MlflowClient(resolve_uri(validate_config(spec.base)))
    try:
        if best is not None:
            client.log_metric(parent, f"best_{spec.search.metric}", float(best))
        client.log_artifact(parent, str(best_path))
        client.set_terminated(parent, "FINISHED")
    except Exception as exc:  # the search itself succeeded; say so and keep going
        print(f"fuss-ray: warning: could not close the MLflow parent run: {exc}")
