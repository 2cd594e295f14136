"""Search spaces written in YAML, turned into an Optuna define-by-run function.

Each entry names a dotted config key and a distribution; `when` makes it conditional on
another parameter's value (mu only for fedprox, the OT settings only for ot-match), which
define-by-run expresses directly: the parameter is simply not suggested otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ParamSpec(BaseModel):
    """One searched parameter."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["categorical", "uniform", "loguniform", "int"]
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    step: int | None = Field(None, ge=1)
    when: dict[str, Any] | None = Field(None, description="key -> value or list of values")

    @model_validator(mode="after")
    def _bounds(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
        else:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"{self.type} needs 'low' < 'high'")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("loguniform needs 'low' > 0")
        return self


def _active(spec: ParamSpec, chosen: dict[str, Any]) -> bool:
    if not spec.when:
        return True
    for key, wanted in spec.when.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if key not in chosen or chosen[key] not in allowed:
            return False
    return True


def order_space(space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
    """Order parameters so that each comes after those its `when` refers to.

    YAML mappings need not list a condition's parameter first; a reference to a parameter
    that is not searched, or a cycle, is an error.
    """
    ordered: dict[str, ParamSpec] = {}
    pending = dict(space)
    while pending:
        ready = [k for k, v in pending.items() if all(r in ordered for r in (v.when or {}))]
        if not ready:
            key, spec = next(iter(pending.items()))
            missing = [r for r in (spec.when or {}) if r not in space]
            what = f"'{missing[0]}', which is not a searched parameter" if missing else "a cycle"
            raise ValueError(f"search.space.{key}.when refers to {what}")
        for k in ready:
            ordered[k] = pending.pop(k)
    return ordered


class DefineByRun:
    """The Optuna define-by-run function for OptunaSearch (a class, so Tune can pickle it)."""

    def __init__(self, space: dict[str, ParamSpec]) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        chosen: dict[str, Any] = {}
        for key, spec in self.space.items():
            if not _active(spec, chosen):
                continue
            if spec.type == "categorical":
                chosen[key] = trial.suggest_categorical(key, spec.choices)
            elif spec.type == "int":
                assert spec.low is not None and spec.high is not None
                chosen[key] = trial.suggest_int(
                    key, int(spec.low), int(spec.high), step=spec.step or 1
                )
            else:
                assert spec.low is not None and spec.high is not None
                chosen[key] = trial.suggest_float(
                    key, spec.low, spec.high, log=spec.type == "loguniform"
                )
        return None


def example_values(space: dict[str, ParamSpec]) -> list[dict[str, Any]]:
    """One assignment per categorical branch, to validate every reachable config up front."""
    base: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.type != "categorical":
            assert spec.low is not None
            base[key] = int(spec.low) if spec.type == "int" else spec.low
    variants = [dict(base)]
    for key, spec in space.items():
        if spec.type == "categorical" and spec.choices:
            variants = [{**v, key: c} for v in variants for c in spec.choices]
    out = []
    for var in variants:
        chosen: dict[str, Any] = {}
        for key, spec in space.items():  # in dependency order, as DefineByRun walks it
            if _active(spec, chosen):
                chosen[key] = var[key]
        out.append(chosen)
    return out
