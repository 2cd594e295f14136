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

`tune` and `study` run a search file and a study file as `fuss-ray tune` and
`fuss-ray study` do, and return what those commands print a summary of.
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


@dataclass(frozen=True)
class StudyResult:
    """A study's `study.json` content, and the folder its report and plots are in."""

    study: dict[str, Any]
    out: Path

    @property
    def report(self) -> Path:
        """The Markdown report: paired differences, intervals, tests, learning curves."""
        return self.out / "report.md"


def tune(
    search: str | Path,
    overrides: list[str] | Mapping[str, Any] | None = None,
    *,
    resume: bool = False,
    address: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a search file: Optuna on Ray Tune, selecting on validation.

    Returns the search's summary (`best` with its params and validation score, the path of
    `best_config`, trial counts, the best config's one test run), as `fuss-ray tune`
    prints it. Overrides: `search.KEY=VALUE` for the search's own settings, any other key
    for the base run config.
    """
    from fuss_ray.tuning import load_search, run_search

    spec = load_search(Path(search), _override_strings(overrides))
    return run_search(spec, resume=resume, address=address, verbose=verbose)


def study(
    spec_file: str | Path,
    overrides: list[str] | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    address: str | None = None,
    verbose: bool = False,
) -> StudyResult:
    """Run (or resume) a study file: strategies x settings x seeds, paired statistics.

    Returns the content of the study's `study.json` (`runs`, `failed`, the paired tests and
    intervals) and its folder, `out` (default: the study file's `out_dir`/`name`), where
    the report and plots are.
    """
    from fuss_ray.study.run import run_study
    from fuss_ray.study.spec import load_study

    spec = load_study(Path(spec_file), _override_strings(overrides))
    folder = resolve_path(Path(out), Path.cwd()) if out is not None else None
    result = run_study(spec, folder, resume=resume, address=address, verbose=verbose)
    return StudyResult(result, folder or spec.study.out_dir / spec.study.name)
