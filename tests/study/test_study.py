"""`fuss-ray study`: bad files in one line, a small study killed and resumed, and its
statistics recomputed independently from its own runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy.stats import bootstrap, wilcoxon

from fuss_ray.config import validate_config
from fuss_ray.errors import UserError
from fuss_ray.simulation import run_simulation
from fuss_ray.study.spec import load_study, planned_runs

from ..conftest import chromium_or_skip, kill_when, tiny_config_dict


def _study_file(tmp_path: Path, cache_dir: Path, uri: str | None = None, **study: Any) -> Path:
    base = tiny_config_dict(
        cache_dir,
        **{"train.rounds": 2, "data.val_fraction": 0.2, "federation.executor": "sequential"},
    )
    base["tracking"] = {"uri": uri or f"sqlite:///{tmp_path / 'mlflow.db'}", "overlays": 0}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    doc = {
        "base": "base.yaml",
        "study": {
            "name": "small",
            "strategies": ["fedavg", "fuss-maximin"],
            "baseline": "fedavg",
            "seeds": [0, 1, 2],
            "grid": {"partition.alpha": [0.5, 5.0]},
            "max_concurrent": 2,
            "out_dir": str(tmp_path / "studies"),
            **study,
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategies": ["fedavg", "fedsgd"]}, "'fedsgd' is not a strategy"),
        ({"baseline": "moon"}, "study.baseline: 'moon' is not one of study.strategies"),
        ({"grid": {"partition.alphaa": [1.0]}}, "unknown key 'partition.alphaa'"),
        ({"grid": {"seed": [1, 2]}}, "set by the study"),
        ({"seeds": [1, 1]}, "distinct seeds"),
        ({"grid": {"partition.alpha": [-1.0]}}, "partition.alpha"),
        ({"bogus": 1}, "unknown key 'study.bogus'"),
    ],
)
def test_bad_study_files_are_one_line_before_ray(
    change: dict[str, Any], message: str, cache_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserError) as err:
        load_study(_study_file(tmp_path, cache_dir, **change))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_set_reaches_the_study_or_the_base(cache_dir: Path, tmp_path: Path) -> None:
    spec = load_study(_study_file(tmp_path, cache_dir), ["study.seeds=[4, 5]", "train.rounds=1"])
    assert spec.study.seeds == [4, 5] and spec.base["train"]["rounds"] == 1
    runs = planned_runs(spec)
    assert len(runs) == 2 * 2 * 2
    assert runs[0].name == "fedavg · alpha=0.5 · seed 4"
    assert runs[0].run_id == "partition.alpha=0.5/fedavg/seed-4"


def _recompute(study: dict[str, Any]) -> None:
    """The cells and comparisons again, from `runs` only, with scipy called directly."""
    runs = study["runs"]
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for r in runs:
        key = json.dumps(r["setting"], sort_keys=True)
        groups.setdefault((r["strategy"], key), {})[r["seed"]] = r["test_miou"]
    for cell in study["cells"]:
        values = groups[(cell["strategy"], json.dumps(cell["setting"], sort_keys=True))]
        data = np.array([values[s] for s in sorted(values)])
        assert cell["n"] == len(data) and cell["mean"] == pytest.approx(data.mean())
        ci = bootstrap(
            (data,), np.mean, n_resamples=9999, method="percentile", rng=np.random.default_rng(0)
        ).confidence_interval
        assert (cell["ci_low"], cell["ci_high"]) == pytest.approx((ci.low, ci.high))
    for row in study["comparisons"]:
        key = json.dumps(row["setting"], sort_keys=True)
        mine, base = groups[(row["strategy"], key)], groups[(study["baseline"], key)]
        d = np.array([mine[s] - base[s] for s in sorted(set(mine) & set(base))])
        assert row["n"] == len(d) and row["mean_diff"] == pytest.approx(d.mean())
        assert row["wins"] == int((d > 0).sum()) and row["losses"] == int((d < 0).sum())
        if np.all(d == 0):
            assert row["wilcoxon_p"] == 1.0
        else:
            assert row["wilcoxon_p"] == pytest.approx(wilcoxon(d).pvalue)
            ci = bootstrap(
                (d,), np.mean, n_resamples=9999, method="percentile", rng=np.random.default_rng(0)
            ).confidence_interval
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))


@dataclass
class SmallStudy:
    folder: Path
    path: Path
    uri: str
    finished_before_resume: dict[Path, int]
    output: dict[str, Any]


@pytest.fixture(scope="module")
def small_study(
    cache_dir: Path,
    mlflow_server: str,
    tmp_path_factory: pytest.TempPathFactory,
    ray_join: dict[str, str],
) -> SmallStudy:
    """12 runs logged to a real MLflow server: killed after two runs, then resumed, both
    on the tests' Ray (the kill takes the driver; the cluster lives on, as on a cluster)."""
    tmp_path = tmp_path_factory.mktemp("study")
    path = _study_file(tmp_path, cache_dir, uri=mlflow_server)
    env = {**os.environ, **ray_join}
    cmd = [sys.executable, "-m", "fuss_ray.cli.main", "study", str(path)]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    runs = tmp_path / "studies" / "small" / "runs"
    finished_two = lambda: len(list(runs.glob("*/*/*/summary.json"))) >= 2  # noqa: E731
    kill_when(proc, finished_two, 600, "no run finished", 0.2)
    finished = {p: p.stat().st_mtime_ns for p in runs.glob("*/*/*/summary.json")}
    again = subprocess.run(
        [*cmd, "--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]
    output = json.loads(again.stdout.strip().splitlines()[-1])
    return SmallStudy(runs.parent, path, mlflow_server, finished, output)


@pytest.mark.slow
def test_a_study_killed_then_resumed_finishes_and_its_statistics_hold(
    small_study: SmallStudy,
) -> None:
    folder, finished = small_study.folder, small_study.finished_before_resume
    assert 2 <= len(finished) < 12
    assert small_study.output["runs"] == 12 and small_study.output["failed"] == 0
    for p, stamp in finished.items():  # runs that had finished were not run again
        assert p.stat().st_mtime_ns == stamp
    study = json.loads((folder / "study.json").read_text())
    assert len(study["runs"]) == 12 and len(study["cells"]) == 4
    assert {(r["strategy"], r["setting"]["partition.alpha"]) for r in study["comparisons"]} == {
        ("fuss-maximin", 0.5),
        ("fuss-maximin", 5.0),
    }
    assert all(r["val_miou"] is not None and r["test_miou"] is not None for r in study["runs"])
    for r in study["runs"]:  # a learning curve per run, ending at its final validation score
        budget = r["budget"]
        assert len(r["val_curve"]) == budget["model_steps"] // budget["local_steps_per_round"]
        assert r["val_curve"][-1] == r["val_miou"]
    _recompute(study)
    # Trial processes serve several runs (Tune's reuse_actors): a run that was not the
    # first in its process gives, bit for bit, what a process of its own gives.
    summaries = sorted(folder.glob("runs/*/*/*/summary.json"), key=lambda p: p.stat().st_mtime)
    last = json.loads(summaries[-1].read_text())
    again = run_simulation(
        validate_config({**last["config"], "tracking": False}),
        small_study.folder.parent / "again",
        show_progress=False,
    )
    assert again["final"] == last["final"] and again["val"] == last["val"]
    assert [r["val_miou"] for r in again["rounds"]] == [r["val_miou"] for r in last["rounds"]]
    report = (folder / "report.md").read_text()
    assert "Paired differences to `fedavg`" in report and "fuss-maximin" in report
    assert (folder / "miou-vs-partition.alpha.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "paired-differences.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "learning-curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Learning curves" in report
    assert all(c["plateau"]["plateaued"] is not None for c in study["cells"])
    from fuss_ray.study.run import run_study

    with pytest.raises(UserError, match="--resume"):  # a second start must not clobber it
        run_study(load_study(small_study.path, base_dir=small_study.path.parent))


@pytest.mark.slow
def test_the_mlflow_runs_page_of_a_study_reads_at_a_glance(small_study: SmallStudy) -> None:
    """Headless Chromium on the study's experiment: run names and datasets in the table."""
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    from ..tuning.test_search import CHROMIUM_ARGS

    chromium = chromium_or_skip()
    client = MlflowClient(small_study.uri)
    exp = client.get_experiment_by_name("small")
    parent = client.get_run(
        json.loads((small_study.folder / "study.json").read_text())["mlflow_parent_run_id"]
    )
    assert parent.info.status == "FINISHED"
    assert "report.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    shot = Path(os.environ.get("FUSS_SCREENSHOT_DIR", small_study.folder)) / "mlflow_study.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 2200, "height": 1000})
        page.goto(f"{small_study.uri}/#/experiments/{exp.experiment_id}/runs")
        # The parent's row (the experiment shares its name: wait for the table's cell).
        page.get_by_role("gridcell").filter(has_text="small").first.wait_for(timeout=60_000)
        page.get_by_role("row").filter(has_text="small").first.get_by_role("button").first.click()
        page.get_by_text("fedavg · alpha=0.5 · seed 0", exact=True).first.wait_for(timeout=30_000)
        page.wait_for_timeout(1_500)
        grid = page.locator('[role="grid"]').first.inner_text()
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    for strategy in ("fedavg", "fuss-maximin"):
        for alpha in ("0.5", "5.0"):
            assert f"{strategy} · alpha={alpha} · seed 0" in grid
    assert "synthetic · dirichlet α=0.5 · 4 clients" in grid  # the Dataset column
    assert shot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_per_cell_tuning_gives_every_strategy_the_same_budget_on_validation(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    """Two strategies, one setting, one seed: each cell is tuned with 2 Optuna trials on
    the validation split (on a data seed the study does not report), and its runs use the
    settings chosen there."""
    from fuss_ray.study.run import run_study

    tune = {
        "num_samples": 2,
        "space": {
            "train.lr_head": {"type": "loguniform", "low": 1e-4, "high": 1e-3},
            "federation.strategy.mu": {
                "type": "loguniform",
                "low": 1e-4,
                "high": 1e-1,
                "when": {"federation.strategy.name": "fedprox"},
            },
        },
        "scheduler": {"kind": "none"},
    }
    path = _study_file(
        tmp_path,
        cache_dir,
        strategies=["fedavg", "fedprox"],
        seeds=[3],
        grid={},
        tune=tune,
    )
    spec = load_study(path, ["train.rounds=1", "tracking=off"], base_dir=tmp_path)
    study = run_study(spec)
    folder = tmp_path / "studies" / "small"
    searches = sorted(p.parent.name for p in (folder / "tuning").glob("*/search_summary.json"))
    assert searches == ["small-base-fedavg", "small-base-fedprox"]
    for name, strategy in zip(searches, ["fedavg", "fedprox"], strict=True):
        search = json.loads((folder / "tuning" / name / "search_summary.json").read_text())
        assert search["trials"] == 2 and search["best"]["test"] is None  # never tested there
        (run,) = [r for r in study["runs"] if r["strategy"] == strategy]
        assert run["tuned"] == search["best"]["params"] and run["seed"] == 3
        ran = json.loads((folder / "runs" / run["run_id"] / "summary.json").read_text())
        assert ran["config"]["train"]["lr_head"] == run["tuned"]["train.lr_head"]  # it ran them
        trial = next((folder / "tuning" / name / "trials").glob("*/config.yaml"))
        assert yaml.safe_load(trial.read_text())["seed"] == 4  # one past the study's seeds
    assert set(study["runs"][1]["tuned"]) == {"train.lr_head", "federation.strategy.mu"}
    assert set(study["runs"][0]["tuned"]) == {"train.lr_head"}


def test_a_study_can_ablate_one_loss_weight(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    """A grid over `loss.weights.knn` alone: every planned run keeps the other weights, and
    a study over that grid finishes, its run without the kNN term included."""
    from fuss_ray.study.run import run_study
    from fuss_ray.study.spec import run_config

    spec = load_study(_study_file(tmp_path, cache_dir, grid={"loss.weights.knn": [0.0, 0.25]}))
    runs = planned_runs(spec)
    assert len(runs) == 2 * 2 * 3
    for planned in runs:
        weights = run_config(spec, planned.strategy, planned.setting, planned.seed).loss.weights
        assert weights.knn == planned.setting["loss.weights.knn"]
        assert (weights.self_, weights.rand) == (0.67, 0.63)
    small = load_study(
        _study_file(tmp_path, cache_dir, grid={"loss.weights.knn": [0.0, 0.25]}),
        ["study.strategies=[fedavg]", "study.seeds=[0]", "train.rounds=1", "tracking=off"],
        base_dir=tmp_path,
    )
    study = run_study(small)
    assert len(study["runs"]) == 2 and not study["failed"]
    folder = tmp_path / "studies" / "small" / "runs"
    for run in study["runs"]:
        ran = json.loads((folder / run["run_id"] / "summary.json").read_text())
        assert ran["final"] is not None
        assert ran["config"]["loss"]["weights"]["knn"] == run["setting"]["loss.weights.knn"]


def test_one_strategy_under_two_labels_runs_with_each_section(
    cache_dir: Path, tmp_path: Path
) -> None:
    """Both centralised references side by side: a label per budget, its own section."""
    from fuss_ray.study.spec import run_config

    both = [
        "fedavg",
        {"label": "centralized-per-model", "name": "centralized"},
        {"label": "centralized-total", "name": "centralized", "budget": "total"},
    ]
    spec = load_study(_study_file(tmp_path, cache_dir, strategies=both, seeds=[0]))
    assert spec.study.strategies == ["fedavg", "centralized-per-model", "centralized-total"]
    by_label = {p.strategy: p for p in planned_runs(spec)}
    assert by_label["centralized-total"].run_id.split("/")[1] == "centralized-total"
    sections = {
        label: run_config(spec, label, p.setting, p.seed).federation.strategy
        for label, p in by_label.items()
    }
    assert sections["centralized-per-model"]["budget"] == "per_model"
    assert sections["centralized-total"] == {"name": "centralized", "budget": "total"}
    assert sections["fedavg"]["name"] == "fedavg"
    with pytest.raises(UserError, match="budget"):
        bad = [*both[:2], {"label": "x", "name": "centralized", "budget": "all"}]
        load_study(_study_file(tmp_path, cache_dir, strategies=bad, seeds=[0]))
    with pytest.raises(UserError, match="once"):
        load_study(_study_file(tmp_path, cache_dir, strategies=["fedavg", "fedavg"]))
