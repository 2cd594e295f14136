"""Running a study: every (strategy, setting, seed) as a Ray Tune trial, then the statistics.

Each run is a trial with its own placement group (its server, one bundle per client
actor), exactly as a search's trials, so a study fills a laptop or a cluster and no two
runs starve each other. Runs land in `DIR/runs/SETTING/STRATEGY/seed-N/`; one whose
folder already holds its finished `summary.json` (same config) is not run again, which is
what `--resume` relies on after a kill. With `study.tune`, each (setting, strategy) cell
is first tuned on the validation split with the same Optuna budget, on a data seed none
of the reported runs use, and its runs then use the chosen settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fuss_ray.config import RunConfig, validate_config
from fuss_ray.errors import SimulationError, UserError
from fuss_ray.io import write_json
from fuss_ray.plugins import receive, shipment
from fuss_ray.study.report import write_report
from fuss_ray.study.spec import (
    PlannedRun,
    StudySpec,
    cell_space,
    experiment_config,
    planned_runs,
    run_config,
    settings,
    slug,
)
from fuss_ray.study.stats import (
    cells_and_comparisons,
    design_warning,
    setting_key,
    smallest_adjusted_p,
)
from fuss_ray.tracking.mlflow_tracker import close_parent_run, open_parent_run
from fuss_ray.tuning.search import (
    SearchSettings,
    SearchSpec,
    failure_line,
    finished_summary,
    quiet_tune,
    run_search,
    trial_bundles,
)

log = logging.getLogger(__name__)
STATE = "study_state.json"


def _study_trainable(params: dict[str, Any]) -> None:
    """One run of the study; a run already finished in its folder is not repeated."""
    from ray import tune

    from fuss_ray.simulation import run_simulation

    receive(params.get("_shipped"))  # strategies written in the user's __main__
    planned = params["_run"]
    config = validate_config(planned["config"])
    out = Path(params["_out"]) / "runs" / planned["id"]
    if finished_summary(out, config) is None:
        run_simulation(
            config,
            out,
            show_progress=False,
            parent_run_id=params["_parent"],
            run_name=planned["name"],
        )
    tune.report({"done": 1.0})


def tune_cells(spec: StudySpec, out: Path, verbose: bool) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (setting, strategy) cell, the settings tuning chose on validation ({} if none)."""
    tuning = spec.study.tune
    if tuning is None:
        return {}
    seed = tuning.seed if tuning.seed is not None else max(spec.study.seeds) + 1
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for setting in settings(spec):
        for strategy in spec.study.strategies:
            key = (setting_key(setting), strategy)
            space = cell_space(tuning.space, spec.study.section(strategy)["name"])
            if not space:  # nothing of this space applies to it: its defaults
                chosen[key] = {}
                continue
            name = slug(f"{spec.study.name}-{setting_key(setting)}-{strategy}")
            done = out / "tuning" / name / "search_summary.json"
            if done.is_file():
                chosen[key] = json.loads(done.read_text())["best"]["params"]
                continue
            base = run_config(spec, strategy, setting, seed).to_dict()
            if isinstance(base.get("tracking"), dict):
                base["tracking"]["experiment"] = f"{spec.study.name}-tuning"
            search = SearchSettings(
                name=name,
                metric=tuning.metric,
                num_samples=tuning.num_samples,
                max_concurrent=tuning.max_concurrent,
                seed=0,
                storage=spec.study.storage,
                out_dir=out / "tuning",
                trial_cpus=spec.study.trial_cpus,
                scheduler=tuning.scheduler,
                space=space,
                test_best=False,  # the study's own runs are its test
            )
            search_spec = SearchSpec(base=base, search=search, base_dir=spec.base_dir)
            resume = (out / "tuning" / name / "tune" / name).is_dir()
            summary = run_search(search_spec, resume=resume, verbose=verbose)
            chosen[key] = summary["best"]["params"]
    return chosen


def _run_pending(
    spec: StudySpec,
    out: Path,
    pending: list[tuple[PlannedRun, RunConfig]],
    parent: str | None,
    verbose: bool,
) -> None:
    """The runs not finished yet, as Tune trials, `max_concurrent` at a time."""
    from ray import tune

    def resources(params: dict[str, Any]) -> tune.PlacementGroupFactory:
        config = validate_config(params["_run"]["config"])
        return tune.PlacementGroupFactory(
            trial_bundles(config, spec.study.trial_cpus), strategy="PACK"
        )

    attempt = 1 + sum(1 for _ in (out / "tune").glob("attempt-*")) if (out / "tune").is_dir() else 1
    runs = [{"id": p.run_id, "name": p.name, "config": c.to_dict()} for p, c in pending]
    tuner = tune.Tuner(
        tune.with_resources(_study_trainable, resources),
        param_space={
            "_run": tune.grid_search(runs),
            "_out": str(out),
            "_parent": parent,
            "_shipped": shipment(),
        },
        tune_config=tune.TuneConfig(
            num_samples=1,
            max_concurrent_trials=spec.study.max_concurrent,
            reuse_actors=True,  # one process per slot, not per run (see tuning/search.py)
            trial_dirname_creator=lambda trial: str(trial.trial_id),
        ),
        run_config=tune.RunConfig(
            name=f"attempt-{attempt}", storage_path=str(out / "tune"), verbose=0
        ),
    )
    with quiet_tune(verbose):
        results = tuner.fit()
    failed = failure_line(results, {})
    if failed is not None:
        log.warning("study: %d of %d runs failed; %s", results.num_errors, len(results), failed)


def _row(planned: PlannedRun, summary: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    final, val = summary.get("final") or {}, summary.get("val") or {}
    return {
        "strategy": planned.strategy,
        "setting": planned.setting,
        "seed": planned.seed,
        "run_id": planned.run_id,
        "val_miou": val.get("miou"),
        "test_miou": final.get("miou"),
        "test_pixel_acc": final.get("pixel_acc"),
        "seconds": summary.get("wall_seconds"),
        "tuned": tuned,
        "alignment": summary.get("alignment"),
        # Validation mIoU after each round: a learning curve per run, on labels that
        # select nothing reported (the test score above is read once, at the end).
        "val_curve": [r.get("val_miou") for r in summary.get("rounds", [])],
        "budget": summary.get("budget"),
    }


def run_study(
    spec: StudySpec,
    out: Path | None = None,
    resume: bool = False,
    address: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a study and write `study.json`, `report.md` and its figures."""
    import time

    from fuss_ray.federation.local_ray import init_ray

    folder = (out or spec.study.out_dir / spec.study.name).resolve()
    state = folder / STATE
    if state.is_file() and not resume:
        raise UserError(
            f"--out: {folder} already holds study '{spec.study.name}'; use --resume to "
            "continue it, or another --out"
        )
    if resume and not state.is_file():
        raise UserError(f"--resume: no study to resume at {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    warning = design_warning(len(spec.study.seeds), len(spec.study.strategies) - 1)
    if warning:
        log.warning("%s", warning)
    base = experiment_config(spec)  # the parent sits with its runs
    parent = open_parent_run(base, folder, spec.study.name, "study", state, resume)
    init_ray(address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    tuned = tune_cells(spec, folder, verbose)
    plans = planned_runs(spec)
    configs = {
        p.run_id: run_config(spec, p.strategy, p.setting, p.seed, tuned.get(cell(p))) for p in plans
    }
    pending = [
        (p, configs[p.run_id])
        for p in plans
        if finished_summary(folder / "runs" / p.run_id, configs[p.run_id]) is None
    ]
    if pending:
        _run_pending(spec, folder, pending, parent, verbose)
    rows, failed = [], []
    for p in plans:
        summary = finished_summary(folder / "runs" / p.run_id, configs[p.run_id])
        if summary is None or summary.get("final") is None:
            failed.append(p.run_id)
        else:
            rows.append(_row(p, summary, tuned.get(cell(p), {})))
    if not rows:
        raise SimulationError(f"study: none of its {len(plans)} runs finished; see {folder}")
    study = study_record(spec, rows, failed, parent)
    study["wall_seconds_this_invocation"] = time.time() - started
    study["runs_this_invocation"] = len(pending)
    write_json(folder / "study.json", study)
    files = write_report(study, folder)
    close_parent_run(base, parent, {}, [folder / "study.json", *files])
    if failed:
        log.warning("study: %d run(s) did not finish: %s", len(failed), ", ".join(failed[:3]))
    return study


def study_record(
    spec: StudySpec, rows: list[dict[str, Any]], failed: list[str], parent: str | None
) -> dict[str, Any]:
    """`study.json`: the design, every finished run's row, the cells and the paired
    comparisons to the baseline (this invocation's timing is added by the caller)."""
    cells, comparisons = cells_and_comparisons(rows, spec.study.baseline, seed=0)
    return {
        "name": spec.study.name,
        "baseline": spec.study.baseline,
        "strategies": spec.study.strategies,
        "seeds": spec.study.seeds,
        "grid": spec.study.grid,
        "settings": settings(spec),
        "tune": spec.study.tune.model_dump(mode="json") if spec.study.tune else None,
        "base_config": spec.base,
        "runs": rows,
        "cells": cells,
        "comparisons": comparisons,
        "failed": failed,
        "smallest_possible_holm_p": smallest_adjusted_p(
            len(spec.study.seeds), len(spec.study.strategies) - 1
        ),
        "mlflow_parent_run_id": parent,
    }


def cell(planned: PlannedRun) -> tuple[str, str]:
    return planned.setting_key, planned.strategy
