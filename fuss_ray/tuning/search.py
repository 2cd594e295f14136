"""`fuss-ray tune`: Optuna TPE on Ray Tune, ASHA per round, one MLflow parent run per search.

Each trial is a full simulation with its own client actors; the trial's placement group is
sized from its config (one bundle for the trial's server, one per client actor), and the
actors are placed into those bundles, so concurrent trials can never starve each other.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fuss_ray.config import (
    RunConfig,
    absolute_uri,
    apply_override,
    format_validation_error,
    load_config,
    resolve_path,
    resolve_paths,
    validate_config,
)
from fuss_ray.errors import SimulationError, UserError
from fuss_ray.io import atomic_path, write_json
from fuss_ray.plugins import receive, shipment
from fuss_ray.tracking.mlflow_tracker import close_parent_run, open_parent_run
from fuss_ray.tuning.space import DefineByRun, ParamSpec, example_values, order_space

log = logging.getLogger(__name__)


class SchedulerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "fuss-search"
    metric: Literal["miou", "pixel_acc"] = Field(
        "miou", description="what trials are selected on, always on the validation split"
    )
    test_best: bool = Field(
        True,
        description="after the search, run the best config once more and score it on the "
        "test split (off: the test split is never touched)",
    )
    num_samples: int = Field(8, ge=1, le=100_000)
    max_concurrent: int = Field(2, ge=1, le=10_000)
    seed: int = Field(0, ge=0)
    storage: str = Field("sqlite:///optuna.db", description="Optuna RDB storage URL")
    out_dir: Path = Path("runs/search")
    trial_cpus: float = Field(0.5, gt=0.0, le=1024.0, description="the trial's own server")
    scheduler: SchedulerSpec = SchedulerSpec()
    space: dict[str, ParamSpec]
    points_to_evaluate: list[dict[str, Any]] = Field(
        default_factory=list,
        description="known settings tried first, in order (the paper's, a colleague's best); "
        "each names searched keys only, and counts towards num_samples",
    )

    @model_validator(mode="after")
    def _order(self) -> SearchSettings:
        self.__dict__["space"] = order_space(self.space)
        for i, point in enumerate(self.points_to_evaluate):
            unknown = sorted(set(point) - set(self.space))
            if unknown:
                raise ValueError(
                    f"search.points_to_evaluate[{i}] sets '{unknown[0]}', which is not a "
                    "searched parameter"
                )
        return self


class SearchSpec(BaseModel):
    """A search file: a base run config, fixed overrides, and the search."""

    model_config = ConfigDict(extra="forbid")
    base: dict[str, Any]
    search: SearchSettings
    base_dir: Path = Field(
        default_factory=Path.cwd, description="what relative paths were resolved against"
    )


SEARCH_PREFIX = "search."


def read_with_base(
    path: Path, section: str, overrides: list[str] | None, base_dir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A search or study file as two trees: its base run config, and its own section.

    `base` names a run config file relative to this file (its paths are then resolved
    against `base_dir`, like every path), or is a mapping; the file's `overrides` apply
    to it, then the command line's `--set`: keys that start with `SECTION.` change the
    section, any other key the base.
    """
    what = f"{section} file"
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{path}: not valid YAML") from None
    if not isinstance(raw, dict) or section not in raw:
        raise UserError(f"{path}: expected a '{section}' section (and optionally 'base')")
    unknown = sorted(set(raw) - {"base", "overrides", section})
    if unknown:
        raise UserError(f"{path}: unknown key '{unknown[0]}' (expected base, overrides, {section})")
    base = raw.get("base", {})
    if isinstance(base, str):
        base = load_config(path.parent / base, base=base_dir).to_dict()
    if not isinstance(base, dict) or not isinstance(raw[section], dict):
        raise UserError(f"{path}: 'base' must be a file name or a mapping, '{section}' a mapping")
    tree = {"base": base, section: raw[section]}
    file_overrides = raw.get("overrides") or {}
    if not isinstance(file_overrides, dict):
        raise UserError(f"{path}: overrides: expected a mapping of dotted keys to values")
    for key, value in file_overrides.items():
        apply_override(tree["base"], f"{key}={json.dumps(value)}")
    for item in overrides or []:
        if item.startswith(f"{section}."):
            apply_override(tree, item)
        else:
            apply_override(tree["base"], item)
    return tree["base"], tree[section]


def load_search(
    path: Path, overrides: list[str] | None = None, base_dir: Path | None = None
) -> SearchSpec:
    """Read a search file, apply overrides, and resolve every path in it.

    `base` may name a run config file, relative to the search file. `--set` overrides
    whose key starts with `search.` change the search file's own settings; every other
    key changes the base run config. Paths (the base's cache, data and tracking store, the
    search's storage and output folder) are then resolved against `base_dir`, the
    directory the command was run from, so that trials, which Ray Tune runs in folders of
    their own, see the same files.
    """
    base_dir = (base_dir or Path.cwd()).resolve()
    base, search = read_with_base(path, "search", overrides, base_dir)
    tree = {"base": base, "search": search}
    try:
        spec = SearchSpec.model_validate(tree)
    except ValidationError as err:
        raise UserError(format_validation_error(err, str(path))) from None
    resolved = resolve_paths(validate_config(spec.base, f"{path}: base"), base_dir)
    if resolved.data.val_fraction <= 0:
        raise UserError(
            f"{path}: base: data.val_fraction: a search selects on the validation split; "
            "set it above 0"
        )
    spec.base = resolved.to_dict()
    spec.search.storage = absolute_uri(spec.search.storage, base_dir)
    spec.search.out_dir = resolve_path(spec.search.out_dir, base_dir)
    spec.base_dir = base_dir
    for values in example_values(spec.search.space):
        trial_config(spec.base, values, base_dir, source=f"{path}: search.space")
    for i, point in enumerate(spec.search.points_to_evaluate):
        trial_config(spec.base, point, base_dir, f"{path}: search.points_to_evaluate[{i}]")
    return spec


def trial_config(
    base: dict[str, Any], values: dict[str, Any], base_dir: Path, source: str = "trial"
) -> RunConfig:
    """The run config of one trial: base plus the sampled values at their dotted keys.

    A searched value that is a path (a trace file, say) is resolved like the base's paths,
    against the directory the search was started from, not the trial's own folder.
    """
    tree = json.loads(json.dumps(base))
    for key, value in values.items():
        if key.startswith("_"):
            continue
        apply_override(tree, f"{key}={json.dumps(value)}")
    return resolve_paths(validate_config(tree, source), base_dir)


def trial_bundles(config: RunConfig, server_cpus: float) -> list[dict[str, float]]:
    """The placement-group bundles a trial needs: its server, then one per client actor."""
    from fuss_ray.federation.executor import actor_bundle
    from fuss_ray.simulation import simulated_clients

    fed = config.federation
    clients = simulated_clients(config)
    actors = math.ceil(clients / fed.clients_per_actor) if fed.executor == "ray" else 0

    actor = actor_bundle(fed) or {"CPU": fed.num_cpus}
    return [{"CPU": server_cpus}] + [dict(actor) for _ in range(actors)]


def _trainable(params: dict[str, Any]) -> None:
    """One trial: a full simulation that reports after every round."""
    from ray import tune

    receive(params.get("_shipped"))  # strategies written in the user's __main__
    config = selection_only(trial_config(params["_base"], params, Path(params["_base_dir"])))
    trial_id = tune.get_context().get_trial_id()
    out = Path(params["_out_dir"]) / "trials" / str(trial_id)

    def report(round_summary: dict[str, Any]) -> None:
        tune.report(
            {
                "val_miou": round_summary["val_miou"],
                "val_pixel_acc": round_summary["val_pixel_acc"],
                "round": round_summary["round"],
            }
        )

    done = finished_summary(out, config)
    if done is not None:  # a resumed search restarted a trial that had finished: replay it
        for round_summary in done["rounds"]:
            report(round_summary)
        return
    from fuss_ray.simulation import run_simulation

    run_simulation(
        config,
        out,
        show_progress=False,
        on_round=report,
        parent_run_id=params["_parent_run_id"],
        run_name=f"{config.federation.strategy['name']} trial {trial_id}",
    )


def selection_only(config: RunConfig) -> RunConfig:
    """A trial's config: scored on the validation split only, the test split never read."""
    evaluation = config.evaluation.model_copy(update={"score_test": False})
    return config.model_copy(update={"evaluation": evaluation})


def finished_summary(out: Path, config: RunConfig) -> dict[str, Any] | None:
    """The summary of this very trial's finished run in `out`, if there is one."""
    try:
        summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("config_digest") == config.digest() else None


def _trial_dirname(trial: Any) -> str:
    """A trial's folder is its id: Tune's default spells out the whole base config."""
    return str(trial.trial_id)


class _TrialErrorsFilter(logging.Filter):
    """Drops Tune's per-trial tracebacks; the search reports the first failure in one line."""

    PREFIXES = (
        "Trial task failed",
        "Trials did not complete",
        "The TensorboardX logger",
        "Failed to fetch metrics",  # a resumed search's trial that never reported
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


@contextmanager
def quiet_tune(verbose: bool) -> Iterator[None]:
    """Without `verbose`: no Tune progress tables and no traceback per failed trial."""
    if verbose:
        yield
        return
    names = (
        "ray.tune.tune",
        "ray.tune.execution.tune_controller",
        "ray.tune.utils.callback",
        "ray.tune.analysis.experiment_analysis",
    )
    loggers = [logging.getLogger(n) for n in names]
    quiet = _TrialErrorsFilter()
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter honours verbose=0
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def _search_folder(spec: SearchSpec, resume: bool) -> Path:
    """The search's folder, refusing a resume of nothing and a restart over a search."""
    settings = spec.search
    out = settings.out_dir / settings.name
    tune_dir = out / "tune"
    if resume and not (tune_dir / settings.name).is_dir():
        raise UserError(f"--resume: no search to resume at {tune_dir / settings.name}")
    if not resume and (tune_dir / settings.name).exists():
        raise UserError(
            f"search.name: {out} already holds a search named '{settings.name}'; "
            "use --resume to continue it or choose another name"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _new_tuner(spec: SearchSpec, trainable: Any, out: Path, parent: str | None) -> Any:
    """A fresh Tuner: Optuna's TPE in a resumable store, ASHA on rounds when asked for."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from fuss_ray.tuning.searcher import ResumableOptunaSearch

    settings = spec.search
    rounds = validate_config(spec.base).train.rounds
    searcher = ResumableOptunaSearch(
        space=DefineByRun(settings.space),
        metric=f"val_{settings.metric}",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        study_name=settings.name,
        storage=optuna.storages.RDBStorage(settings.storage),
        points_to_evaluate=[dict(p) for p in settings.points_to_evaluate] or None,
    )
    scheduler = None
    if settings.scheduler.kind == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=rounds,
            grace_period=min(settings.scheduler.grace_period, rounds),
            reduction_factor=settings.scheduler.reduction_factor,
        )
    return tune.Tuner(
        trainable,
        param_space={
            "_base": spec.base,
            "_base_dir": str(spec.base_dir),
            "_out_dir": str(out),
            "_parent_run_id": parent,
            "_shipped": shipment(),
        },
        tune_config=tune.TuneConfig(
            search_alg=tune.search.ConcurrencyLimiter(searcher, settings.max_concurrent),
            scheduler=scheduler,
            metric=f"val_{settings.metric}",
            mode="max",
            num_samples=settings.num_samples,
            # A trial's process serves the next trial of the same resources: its imports
            # (torch, MLflow, fuss-ray: seconds of a core) are paid once per slot, not per
            # trial. Every run seeds itself, so the numbers are those of fresh processes.
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(name=settings.name, storage_path=str(out / "tune"), verbose=0),
    )


def run_search(
    spec: SearchSpec, resume: bool = False, address: str | None = None, verbose: bool = False
) -> dict[str, Any]:
    """Run (or resume) the search; write the best trial's config as a ready-to-run YAML.

    With `verbose`, Ray Tune's own progress output and every failed trial's traceback are
    shown; otherwise a failure is reported once, in one line (see `failure_line`).
    """
    import optuna
    from ray import tune

    from fuss_ray.federation.local_ray import init_ray

    settings = spec.search
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = _search_folder(spec, resume)
    init_ray(address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    parent = open_parent_run(
        validate_config(spec.base), out, settings.name, "search", out / "search_state.json", resume
    )

    def resources(params: dict[str, Any]) -> tune.PlacementGroupFactory:
        config = trial_config(params["_base"], params, spec.base_dir)
        bundles = trial_bundles(config, settings.trial_cpus)
        return tune.PlacementGroupFactory(bundles, strategy="PACK")

    trainable = tune.with_resources(_trainable, resources)
    if resume:
        tuner = tune.Tuner.restore(
            str(out / "tune" / settings.name),
            trainable,
            resume_unfinished=True,
            resume_errored=True,
        )
    else:
        tuner = _new_tuner(spec, trainable, out, parent)
    with quiet_tune(verbose):
        results = tuner.fit()
    failed = failure_line(results, spec.base)
    if failed is not None and results.num_errors == len(results):
        raise SimulationError(f"search: all {len(results)} trials failed; {failed}")
    if failed is not None:
        log.warning("search: %d of %d trials failed; %s", results.num_errors, len(results), failed)
    return _finish_search(spec, results, out, parent)


def _finish_search(spec: SearchSpec, results: Any, out: Path, parent: str | None) -> dict[str, Any]:
    """The best trial (on validation), its config file, its one test run, the summary."""
    settings = spec.search
    target = f"val_{settings.metric}"
    best = results.get_best_result(metric=target, mode="max", scope="all")
    chosen = {k: v for k, v in (best.config or {}).items() if not k.startswith("_")}
    best_val = (best.metrics or {}).get(target)
    best_cfg = trial_config(spec.base, chosen, spec.base_dir)
    test = _test_the_best(best_cfg, out, parent) if settings.test_best else None
    best_path = out / "best_config.yaml"
    scored = f"; test {settings.metric} {test[settings.metric]:.2f}, run once after" if test else ""
    with atomic_path(best_path) as tmp:
        tmp.write_text(
            f"# Best trial of search '{settings.name}' (validation {settings.metric} "
            f"{best_val if best_val is not None else float('nan'):.2f}{scored}); run it with\n"
            f"#   fuss-ray run {best_path}\n" + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False)
        )
    rows = trial_rows(results, validate_config(spec.base).train.rounds)
    summary = {
        "name": settings.name,
        "trials": len(results),
        "errored": results.num_errors,
        "stopped_early": sum(1 for t in rows if t["stopped_early"]),
        "trial_results": rows,
        "best": {"params": chosen, target: best_val, "test": test},
        "best_config": str(best_path),
        "parent_run_id": parent,
    }
    write_json(out / "search_summary.json", summary)
    close_parent_run(
        validate_config(spec.base),
        parent,
        {f"best_{target}": best_val, **_prefixed("best_test_", test)},
        [best_path],
    )
    return summary


def _prefixed(prefix: str, scores: dict[str, Any] | None) -> dict[str, float | None]:
    return {f"{prefix}{k}": v for k, v in (scores or {}).items() if k in ("miou", "pixel_acc")}


def _test_the_best(config: RunConfig, out: Path, parent: str | None) -> dict[str, Any] | None:
    """The one look at the test split: the chosen config, run again and scored there.

    A resumed search whose best run already finished reads it back rather than run (and
    log) it a second time."""
    from fuss_ray.simulation import run_simulation

    done = finished_summary(out / "best", config)
    if done is not None and done.get("final") is not None:
        summary = done
    else:
        name = f"{config.federation.strategy['name']} best config (test split)"
        summary = run_simulation(
            config, out / "best", show_progress=False, parent_run_id=parent, run_name=name
        )
    final: dict[str, Any] | None = summary["final"]
    return {k: final[k] for k in ("miou", "pixel_acc")} if final else None


def trial_rows(results: Any, rounds: int) -> list[dict[str, Any]]:
    """Per trial, in the order they started: its values, how far it ran, its last scores."""
    rows = []
    for r in results:
        metrics = r.metrics or {}
        ran = int(metrics.get("round", 0))
        rows.append(
            {
                "trial_id": metrics.get("trial_id", Path(r.path).name),
                "params": {k: v for k, v in (r.config or {}).items() if not k.startswith("_")},
                "rounds": ran,
                "val_miou": metrics.get("val_miou"),
                "val_pixel_acc": metrics.get("val_pixel_acc"),
                "stopped_early": r.error is None and ran < rounds,
                "error": None if r.error is None else type(_root_cause(r.error)).__name__,
            }
        )
    return rows


def _root_cause(error: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (RayTaskError keeps it as `cause`)."""
    seen = 0
    while getattr(error, "cause", None) is not None and seen < 10:
        error = error.cause  # type: ignore[attr-defined]
        seen += 1
    return error


def failure_line(results: Any, base: dict[str, Any]) -> str | None:
    """The first failed trial in one line: its cause, its searched values, its logs.

    Tune keeps every trial's traceback in `error.txt` in the trial's folder; the console
    gets the cause and where to look, not one traceback per trial.
    """
    failed = [r for r in results if r.error is not None]  # in the order trials started
    if not failed:
        return None
    first = failed[0]
    cause = _root_cause(first.error)
    message = (str(cause).strip().splitlines() or [""])[0][:300]
    values = {k: v for k, v in (first.config or {}).items() if not k.startswith("_")}
    differ = ", ".join(f"{k}={v!r}" for k, v in sorted(values.items()) if _lookup(base, k) != v)
    logs = Path(first.path) / "error.txt"
    where = logs if logs.is_file() else Path(first.path)
    return (
        f"the first: {type(cause).__name__}: {message}"
        f"{f' (trial values: {differ})' if differ else ''}; full log: {where}"
    )


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
