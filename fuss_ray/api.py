"""fuss-ray from Python: load a config, run it, get its results back as an object.

Researchers work in notebooks and scripts, where Flower's `run_simulation` and Ray Tune's
`Tuner` are called from code; this is the same for fuss-ray. The command line runs the
same functions, so a run started here and one started by `fuss-ray run` with the same
overrides give the same numbers. Errors are the command line's one-line `UserError`s,
raised instead of printed.

    import fuss_ray
    config = fuss_ray.load_config("configs/quickstart.yaml", ["train.rounds=2"])
    result = fuss_ray.run(config, on_round=lambda r: print(r["round"], r["val_miou"]))
    result.final["miou"]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuss_ray.config import RunConfig, resolve_path, resolve_paths, validate_config
from fuss_ray.config import load_config as _load_file
from fuss_ray.errors import UserError
from fuss_ray.simulation import run_simulation


@dataclass(frozen=True)
class RunResult:
    """What a run wrote to `out/summary.json`, and where."""

    summary: dict[str, Any]
    out: Path

    @property
    def final(self) -> dict[str, Any] | None:
        """The test split's final scores (None for a run that has no test split)."""
        final: dict[str, Any] | None = self.summary.get("final")
        return final

    @property
    def rounds(self) -> list[dict[str, Any]]:
        """Every round's summary, in order (validation and test scores, losses, bytes)."""
        rounds: list[dict[str, Any]] = self.summary["rounds"]
        return rounds


def _override_strings(overrides: list[str] | Mapping[str, Any] | None) -> list[str]:
    """The command line's `key.path=value` strings, from a list of them or a dict."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):  # JSON is YAML: values arrive as they were given
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return list(overrides)


def load_config(
    source: str | Path | Mapping[str, Any] | RunConfig,
    overrides: list[str] | Mapping[str, Any] | None = None,
) -> RunConfig:
    """A checked run config from a YAML file or a dict, with `--set`-style overrides
    (`["train.rounds=3"]` or `{"train.rounds": 3}`); relative paths resolve against the
    working directory, as on the command line."""
    sets = _override_strings(overrides)
    if isinstance(source, RunConfig):
        source = source.to_dict()
    if isinstance(source, Mapping):
        from fuss_ray.config import apply_override

        tree = dict(source)
        for item in sets:
            apply_override(tree, item)
        return resolve_paths(validate_config(tree, "config"), None)
    return _load_file(Path(source), sets)


def run(
    config: RunConfig | str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    progress: bool = True,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> RunResult:
    """Run a simulation to its end (or, with `resume`, continue one in `out`).

    `out` defaults to `runs/<config name>` as on the command line. `on_round` receives each
    round's summary as the round ends (the tracker and the progress bar see the same).
    """
    checked = config if isinstance(config, RunConfig) else load_config(config)
    folder = resolve_path(Path(out) if out is not None else Path("runs") / checked.name, Path.cwd())
    if folder.exists() and not folder.is_dir():
        raise UserError(f"out: {folder} exists and is not a folder")
    summary = run_simulation(
        checked, folder, show_progress=progress, on_round=on_round, resume=resume
    )
    return RunResult(summary, folder)
