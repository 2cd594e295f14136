"""A study file: a base run config, fixed overrides, and the strategies, grid and seeds.

    base: ../quickstart.yaml          # relative to the study file
    overrides: {train.rounds: 6}      # optional
    study:
      name: alpha-sweep
      strategies: [fedavg, fuss-maximin, ot-match]
      baseline: fedavg
      seeds: [0, 1, 2, 3, 4, 5, 6, 7]
      grid: {partition.alpha: [0.1, 1.0]}
      tune: {num_samples: 8, space: {...}}   # optional: the same budget for every cell

Every run the file describes (strategies x grid settings x seeds) is checked before Ray
starts, so a bad key or value is one line that names it.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fuss_ray.config import (
    RunConfig,
    absolute_uri,
    apply_override,
    format_validation_error,
    resolve_path,
    resolve_paths,
    validate_config,
)
from fuss_ray.errors import UserError
from fuss_ray.plugins import STRATEGIES
from fuss_ray.study.stats import setting_key
from fuss_ray.tuning.search import SchedulerSpec, read_with_base
from fuss_ray.tuning.space import ParamSpec, example_values, order_space

RESERVED = ("seed", "federation.strategy")  # set by the study itself, run by run


class StudyTuning(BaseModel):
    """Per-cell tuning: every strategy in every setting gets the same Optuna budget."""

    model_config = ConfigDict(extra="forbid")
    num_samples: int = Field(ge=1, le=10_000)
    space: dict[str, ParamSpec]
    metric: str = Field("miou", pattern="^(miou|pixel_acc)$")
    seed: int | None = Field(
        None,
        ge=0,
        description="the data seed tuning runs use (default: one past the study's seeds, "
        "so that choosing and reporting never share a partition)",
    )
    max_concurrent: int = Field(2, ge=1)
    scheduler: SchedulerSpec = SchedulerSpec()


class StudySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # Labels, one per compared strategy. An entry of the file is a strategy's name, or a
    # mapping {label, name, ...its settings} (`{label: centralized-total, name:
    # centralized, budget: total}`), so one strategy can be compared under two settings.
    strategies: list[str] = Field(min_length=1)
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="label -> the strategy section its runs use"
    )
    baseline: str
    seeds: list[int] = Field(min_length=1)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    settings: list[dict[str, Any]] | None = Field(
        None,
        description="an explicit list of settings instead of a grid's every combination, "
        "e.g. [{partition.alpha: 0.1}, {partition.alpha: 0.1, model.centroid_order: "
        "per_client}]",
    )
    tune: StudyTuning | None = None
    max_concurrent: int = Field(2, ge=1, le=10_000, description="runs at once")
    trial_cpus: float = Field(0.5, gt=0.0, le=1024.0, description="each run's own server")
    out_dir: Path = Path("runs/studies")
    storage: str = Field("sqlite:///optuna.db", description="Optuna storage for tuning")

    @model_validator(mode="before")
    @classmethod
    def _labelled(cls, data: Any) -> Any:
        """Entries given as mappings become labels, their sections `variants`."""
        if not isinstance(data, dict) or not isinstance(data.get("strategies"), list):
            return data
        labels, variants = [], {}
        for entry in data["strategies"]:
            if isinstance(entry, dict):
                section = {k: v for k, v in entry.items() if k != "label"}
                label = str(entry.get("label") or section.get("name"))
                variants[label] = section
                labels.append(label)
            else:
                labels.append(entry)
        return {**data, "strategies": labels, "variants": variants}

    @model_validator(mode="after")
    def _known(self) -> StudySettings:
        known = ", ".join(sorted(STRATEGIES))
        for label in self.strategies:
            name = self.section(label).get("name")
            if name not in STRATEGIES:
                raise ValueError(f"study.strategies: '{name}' is not a strategy (known: {known})")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", label):
                raise ValueError(f"study.strategies: label '{label}' must be a plain name")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError("study.strategies: names each strategy (or label) once")
        return self

    def section(self, label: str) -> dict[str, Any]:
        """The `federation.strategy` section of a label's runs."""
        return dict(self.variants.get(label, {"name": label}))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError("must be distinct seeds >= 0")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if key == "seed" or key.startswith(RESERVED[1]):
                raise ValueError(f"'{key}' is set by the study (seeds, strategies), not the grid")
            if not values:
                raise ValueError(f"'{key}' needs at least one value")
        return v

    @model_validator(mode="after")
    def _baseline(self) -> StudySettings:
        if self.baseline not in self.strategies:
            raise ValueError(f"study.baseline: '{self.baseline}' is not one of study.strategies")
        if self.settings is not None:
            if self.grid:
                raise ValueError("study: give either grid or settings, not both")
            if not self.settings:
                raise ValueError("study.settings: list at least one setting")
            for setting in self.settings:
                self._grid({k: [v] for k, v in setting.items()})
        return self


class StudySpec(BaseModel):
    """A whole study file, paths resolved."""

    model_config = ConfigDict(extra="forbid")
    base: dict[str, Any]
    study: StudySettings
    base_dir: Path


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: a strategy, a grid setting and a seed."""

    strategy: str
    setting: dict[str, Any]
    seed: int

    @property
    def setting_key(self) -> str:
        return setting_key(self.setting)

    @property
    def run_id(self) -> str:
        """A stable folder name: the same run always lands in the same place."""
        return f"{slug(self.setting_key)}/{self.strategy}/seed-{self.seed}"

    @property
    def name(self) -> str:
        """The MLflow run name: what the run is, at a glance."""
        parts = [self.strategy, *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.setting.items())]
        return " · ".join([*parts, f"seed {self.seed}"])


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9=.,_-]+", "_", text.replace(", ", ",")) or "base"


def settings(spec: StudySpec) -> list[dict[str, Any]]:
    """The study's settings: its explicit list, else every combination of the grid's values
    (one empty setting without either)."""
    if spec.study.settings is not None:
        return [dict(s) for s in spec.study.settings]
    keys = list(spec.study.grid)
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(spec.study.grid[k] for k in keys))
    ]


def planned_runs(spec: StudySpec) -> list[PlannedRun]:
    """Setting by setting, strategy by strategy, seed by seed."""
    return [
        PlannedRun(strategy, setting, seed)
        for setting in settings(spec)
        for strategy in spec.study.strategies
        for seed in spec.study.seeds
    ]


def run_config(
    spec: StudySpec,
    strategy: str,
    setting: dict[str, Any],
    seed: int,
    tuned: dict[str, Any] | None = None,
    source: str = "study",
) -> RunConfig:
    """The config of one run: base, the setting's values, the strategy (its default
    settings, or those tuning chose), the seed, logged to the study's experiment."""
    tree = json.loads(json.dumps(spec.base))
    for key, value in setting.items():
        apply_override(tree, f"{key}={json.dumps(value)}")
    tree.setdefault("federation", {})["strategy"] = spec.study.section(strategy)
    for key, value in (tuned or {}).items():
        apply_override(tree, f"{key}={json.dumps(value)}")
    tree["seed"] = seed
    tracking = tree.get("tracking")
    if isinstance(tracking, dict) and not tracking.get("experiment"):
        tracking["experiment"] = spec.study.name
    return resolve_paths(validate_config(tree, source), spec.base_dir)


def experiment_config(spec: StudySpec) -> RunConfig:
    """The base config, logging to the study's experiment (its own, else the study's name)."""
    base = validate_config(spec.base)
    if base.tracking.experiment:
        return base
    tracking = base.tracking.model_copy(update={"experiment": spec.study.name})
    return base.model_copy(update={"tracking": tracking})


def cell_space(space: dict[str, ParamSpec], strategy: str) -> dict[str, ParamSpec]:
    """The part of a tuning space that applies to one strategy: parameters conditioned on
    another strategy's name are dropped, the condition on this one's is met."""
    out: dict[str, ParamSpec] = {}
    for key, param in space.items():
        when = dict(param.when or {})
        wanted = when.pop("federation.strategy.name", None)
        if wanted is not None:
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if strategy not in allowed:
                continue
        out[key] = param.model_copy(update={"when": when or None})
    return order_space(out)


def load_study(
    path: Path, overrides: list[str] | None = None, base_dir: Path | None = None
) -> StudySpec:
    """Read and check a study file, its paths resolved against `base_dir` (the cwd)."""
    base_dir = (base_dir or Path.cwd()).resolve()
    base, study = read_with_base(path, "study", overrides, base_dir)
    try:
        spec = StudySpec.model_validate({"base": base, "study": study, "base_dir": base_dir})
    except ValidationError as err:
        raise UserError(format_validation_error(err, str(path))) from None
    resolved = resolve_paths(validate_config(spec.base, f"{path}: base"), base_dir)
    spec.base = resolved.to_dict()
    spec.study.out_dir = resolve_path(spec.study.out_dir, base_dir)
    spec.study.storage = absolute_uri(spec.study.storage, base_dir)
    if spec.study.tune is not None and resolved.data.val_fraction <= 0:
        raise UserError(
            f"{path}: base: data.val_fraction: study.tune selects on the validation split; "
            "set it above 0"
        )
    for setting in settings(spec):  # every run's config, checked before anything starts
        for strategy in spec.study.strategies:
            run_config(spec, strategy, setting, spec.study.seeds[0], source=f"{path}: study")
            if spec.study.tune is not None:
                try:
                    space = cell_space(spec.study.tune.space, strategy)
                except ValueError as err:
                    raise UserError(f"{path}: study.tune.space: {err}") from None
                for values in example_values(space):
                    run_config(spec, strategy, setting, 0, values, f"{path}: study.tune.space")
    return spec
