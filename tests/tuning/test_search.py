"""A real (tiny) search on the local Ray: trials nest under a parent run and never hang."""

import faulthandler
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from fuss_ray.config import load_config
from fuss_ray.errors import UserError
from fuss_ray.tuning import load_search, run_search
from fuss_ray.tuning.search import trial_bundles, trial_config

from ..conftest import chromium_or_skip, tiny_config_dict

SPACE = {
    "federation.strategy.name": {"type": "categorical", "choices": ["fedprox", "ot-match"]},
    "partition.alpha": {"type": "loguniform", "low": 0.1, "high": 1.0},
    "federation.strategy.mu": {
        "type": "loguniform",
        "low": 1e-4,
        "high": 1e-1,
        "when": {"federation.strategy.name": "fedprox"},
    },
    "federation.strategy.epsilon": {
        "type": "loguniform",
        "low": 0.01,
        "high": 0.5,
        "when": {"federation.strategy.name": "ot-match"},
    },
}


def _search_file(tmp_path: Path, cache_dir: Path, uri: str | None = None, **search: object) -> Path:
    base = tiny_config_dict(
        cache_dir,
        **{
            "federation.executor": "ray",
            "federation.clients_per_actor": 4,
            "federation.num_cpus": 0.5,
        },
    )
    base["tracking"] = {
        "uri": uri or f"sqlite:///{tmp_path / 'mlflow.db'}",
        "experiment": "search",
    }
    doc = {
        "base": base,
        "search": {
            "name": "tiny",
            "num_samples": 3,
            "max_concurrent": 2,
            "seed": 0,
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "out_dir": str(tmp_path / "out"),
            "trial_cpus": 0.5,
            "scheduler": {"kind": "asha", "grace_period": 1},
            "space": SPACE,
            **search,
        },
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_conditional_params_and_bundles(cache_dir: Path, tmp_path: Path) -> None:
    spec = load_search(_search_file(tmp_path, cache_dir))
    cfg = trial_config(
        spec.base,
        {"federation.strategy.name": "fedprox", "federation.strategy.mu": 0.01},
        spec.base_dir,
    )
    assert cfg.federation.strategy == {"name": "fedprox", "mu": 0.01}
    assert trial_bundles(cfg, 0.5) == [{"CPU": 0.5}, {"CPU": 0.5}]


def test_set_reaches_the_search_or_the_base_by_prefix(cache_dir: Path, tmp_path: Path) -> None:
    spec = load_search(
        _search_file(tmp_path, cache_dir),
        ["search.num_samples=5", "search.scheduler.grace_period=2", "train.rounds=3"],
    )
    assert spec.search.num_samples == 5 and spec.search.scheduler.grace_period == 2
    assert spec.base["train"]["rounds"] == 3
    with pytest.raises(UserError, match=r"search\.bogus") as err:
        load_search(_search_file(tmp_path, cache_dir), ["search.bogus=1"])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"unknown key 'train\.roundz'"):
        load_search(_search_file(tmp_path, cache_dir), ["train.roundz=1"])


def test_relative_paths_of_a_search_resolve_where_the_command_runs(
    cache_dir: Path, tmp_path: Path
) -> None:
    """Trials run in their own folders, so they must only ever see absolute paths."""
    path = _search_file(tmp_path, cache_dir)
    doc = yaml.safe_load(path.read_text())
    doc["base"]["features"]["cache_dir"] = "cache"
    doc["base"]["tracking"]["uri"] = "sqlite:///runs/mlflow.db"
    doc["search"].update({"storage": "sqlite:///optuna.db", "out_dir": "runs/search"})
    doc["search"]["space"]["systems.speed_trace"] = {
        "type": "categorical",
        "choices": ["slow.json", "fast.json"],
    }
    path.write_text(yaml.safe_dump(doc))
    where = tmp_path / "cwd"
    spec = load_search(path, base_dir=where)
    assert spec.base["features"]["cache_dir"] == str(where / "cache")
    assert spec.base["tracking"]["uri"] == f"sqlite:///{where}/runs/mlflow.db"
    assert spec.search.storage == f"sqlite:///{where}/optuna.db"
    assert spec.search.out_dir == where / "runs" / "search"
    trial = trial_config(spec.base, {"systems.speed_trace": "slow.json"}, spec.base_dir)
    assert trial.systems.speed_trace == where / "slow.json"


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"partition.bogus": {"type": "uniform", "low": 0, "high": 1}}, "unknown key"),
        ({"partition.alpha": {"type": "loguniform", "low": 0, "high": 1}}, "low' > 0"),
        (
            {
                "federation.strategy.mu": {
                    "type": "uniform",
                    "low": 0,
                    "high": 1,
                    "when": {"federation.strategy.name": "fedprox"},
                }
            },
            "not a searched parameter",
        ),
        ({"train.rounds": {"type": "categorical", "choices": []}}, "choices"),
    ],
)
def test_bad_search_space_is_one_line(
    space: dict,
    message: str,
    cache_dir: Path,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    with pytest.raises(UserError) as err:
        load_search(_search_file(tmp_path, cache_dir, space=space))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.ray
def test_failed_trials_are_reported_in_one_line(
    cache_dir: Path,
    tmp_path: Path,
    ray_session: None,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each trial fails at its first round (a trace file that is not there): the console
    gets the first failure's cause, its searched values and its log, and no traceback."""
    from fuss_ray.cli.main import main

    path = _search_file(tmp_path, cache_dir, num_samples=2)
    argv = ["tune", str(path), "--set", "systems.enabled=true"]
    argv += ["--set", f"systems.speed_trace={tmp_path / 'absent.json'}", "--set", "tracking=off"]
    assert main(argv) == 1
    captured = capfd.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert "Traceback" not in captured.out + captured.err
    assert not [r for r in caplog.records if r.exc_info or "Trial" in r.getMessage()]
    last = lines[-1]
    assert last.startswith(
        "fuss-ray: failed: search: all 2 trials failed; the first: UserError: "
        f"systems.speed_trace: {tmp_path / 'absent.json'} does not exist (trial values: "
    ), last
    assert "federation.strategy.name=" in last and "partition.alpha=" in last
    log = Path(last.rsplit("full log: ", 1)[1])
    assert log.name == "error.txt" and "does not exist" in log.read_text()


@pytest.mark.ray
def test_asha_stops_a_clearly_losing_trial_and_optuna_keeps_every_trial(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    """One good trial first, then two that can learn nothing (every update rejected).

    With one trial at a time, the losers reach the first rung after the winner, so ASHA
    (reduction factor 2) must stop them there; Optuna's study must still hold all three.
    """
    import optuna

    space = {"federation.max_update_norm": {"type": "categorical", "choices": [1000.0, 1e-9]}}
    good, bad = {"federation.max_update_norm": 1000.0}, {"federation.max_update_norm": 1e-9}
    path = _search_file(
        tmp_path,
        cache_dir,
        space=space,
        points_to_evaluate=[good, bad, bad],
        num_samples=3,
        max_concurrent=1,
        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    # The federation's whole budget (4 clients x 10 steps a round), so that the good trial
    # is clearly ahead at the first rung.
    sets = ["federation.strategy=centralized", "federation.strategy.budget=total"]
    sets += ["train.local_steps=10", "train.rounds=3"]
    sets += ["data.val_fraction=0.3", "search.test_best=false", "tracking=off"]
    spec = load_search(path, sets)
    summary = run_search(spec)
    assert summary["trials"] == 3 and summary["errored"] == 0
    assert summary["best"]["params"] == good
    ran = [(t["params"], t["rounds"], t["stopped_early"]) for t in summary["trial_results"]]
    assert ran == [(good, 3, False), (bad, 1, True), (bad, 1, True)], ran  # stopped at rung 1
    assert summary["stopped_early"] == 2
    study = optuna.load_study(study_name="tiny", storage=spec.search.storage)
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert [t.params for t in study.trials] == [good, bad, bad]


@dataclass
class TinySearch:
    summary: dict  # type: ignore[type-arg]
    uri: str
    folder: Path
    cache_dir: Path


@pytest.fixture(scope="module")
def tiny_search(
    cache_dir: Path, ray_session: None, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> TinySearch:
    """3 trials, 2 at once, on the real local Ray, logged over HTTP to a real server."""
    folder = tmp_path_factory.mktemp("search")
    faulthandler.dump_traceback_later(900, exit=True)  # a hang fails the suite, never stalls it
    try:
        summary = run_search(load_search(_search_file(folder, cache_dir, mlflow_server)))
    finally:
        faulthandler.cancel_dump_traceback_later()
    return TinySearch(summary, mlflow_server, folder, cache_dir)


@pytest.mark.ray
def test_tiny_search_nests_runs_and_writes_best_config(tiny_search: TinySearch) -> None:
    summary = tiny_search.summary
    assert summary["trials"] == 3 and summary["errored"] == 0
    best = load_config(Path(summary["best_config"]))
    assert best.federation.strategy["name"] in ("fedprox", "ot-match")
    client = MlflowClient(tiny_search.uri)
    exp = client.get_experiment_by_name("search")
    runs = client.search_runs([exp.experiment_id])
    parent = summary["parent_run_id"]
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    children = [r for r in nested if " trial " in r.info.run_name]
    (tested,) = [r for r in nested if r.info.run_name.endswith("best config (test split)")]
    assert len(children) == 3
    # Trials see the validation split only: no test score is ever logged by one.
    assert all("val_miou" in r.data.metrics for r in children)
    assert not any("miou" in r.data.metrics or "final_miou" in r.data.metrics for r in children)
    # Trials that ran every round are complete in MLflow; ASHA-stopped ones say KILLED.
    assert {r.info.status for r in children} <= {"FINISHED", "KILLED"}
    # A trial is a Ray actor already: it runs its own rounds, with no server actor.
    out = tiny_search.folder / "out" / "tiny"
    finished = [json.loads(p.read_text()) for p in out.glob("trials/*/summary.json")]
    assert finished and all(t["server"]["actor"] is False for t in finished)
    # The best config's test run is the driver's own run: its rounds ran in a server actor.
    assert json.loads((out / "best" / "summary.json").read_text())["server"]["actor"] is True
    # The chosen config is run once more, on the test split, after the search.
    assert tested.info.status == "FINISHED" and "final_miou" in tested.data.metrics
    assert tested.info.start_time >= max(r.info.end_time for r in children)
    assert summary["best"]["test"]["miou"] == pytest.approx(tested.data.metrics["final_miou"])
    # Two trials ran at once: their run intervals overlap.
    spans = sorted((r.info.start_time, r.info.end_time) for r in children)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert {"best_val_miou", "best_test_miou"} <= set(parent_run.data.metrics)
    state = json.loads((tiny_search.folder / "out" / "tiny" / "search_state.json").read_text())
    assert state["parent_run_id"] == parent
    # --resume reopens the same Tune experiment and the same parent run.
    spec = load_search(_search_file(tiny_search.folder, tiny_search.cache_dir, tiny_search.uri))
    resumed = run_search(spec, resume=True)
    assert resumed["trials"] == 3 and resumed["parent_run_id"] == parent
    assert resumed["best"]["test"] == summary["best"]["test"]
    again = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("mlflow.parentRunId") == parent
        and r.info.run_name.endswith("best config (test split)")
    ]
    assert [r.info.run_id for r in again] == [tested.info.run_id]  # not run a second time
    with pytest.raises(UserError, match="--resume"):
        run_search(
            load_search(_search_file(tiny_search.folder, tiny_search.cache_dir, tiny_search.uri))
        )


@pytest.mark.ray
def test_mlflow_ui_lists_the_trials(tiny_search: TinySearch) -> None:
    """Headless Chromium opens the search's experiment page, as a user would."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    client = MlflowClient(tiny_search.uri)
    exp = client.get_experiment_by_name("search")
    children = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("mlflow.parentRunId") == tiny_search.summary["parent_run_id"]
    ]
    shot = Path(os.environ.get("FUSS_SCREENSHOT_DIR", tiny_search.folder)) / "mlflow_search.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        # Wide, because the runs grid only renders the columns in view.
        page = browser.new_page(viewport={"width": 2600, "height": 700})
        page.goto(f"{tiny_search.uri}/#/experiments/{exp.experiment_id}/runs")
        page.get_by_text("tiny", exact=True).first.wait_for(timeout=60_000)  # the parent run
        page.get_by_role("row").filter(has_text="tiny").get_by_role("button").first.click()
        for run in children:
            page.get_by_text(run.info.run_name, exact=True).first.wait_for(timeout=30_000)
        for name in ("val_final_miou", "final_miou", "strategy"):
            _show_column(page, name)
        page.get_by_text("val_final_miou", exact=True).first.wait_for(timeout=30_000)
        page.wait_for_timeout(1_000)
        grid = page.locator('[role="grid"]').first.inner_text()
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    shown = 0
    for run in children:
        assert run.info.run_name.startswith(run.data.tags["strategy"])  # strategy shown by name
        for key in ("val_final_miou", "final_miou"):  # trials: validation; the best: test
            if key in run.data.metrics:
                value = run.data.metrics[key]
                assert f"{value:.4g}"[:4] in grid or str(round(value, 2))[:4] in grid
                shown += 1
    assert shown >= 1
    assert shot.read_bytes()[:4] == b"\x89PNG"


def _show_column(page: Any, name: str) -> None:
    """Tick a metric or tag in the runs table's Columns menu (the list fills in lazily)."""
    node = page.locator(
        f'[class*="tree-treenode"]:has(span[title="{name}"]) [class*="tree-checkbox"]'
    )
    for _ in range(10):
        page.get_by_role("button", name="Columns").first.click()
        try:
            node.first.wait_for(timeout=3_000)
        except Exception:
            page.keyboard.press("Escape")
            page.wait_for_timeout(1_000)
            continue
        node.first.click()
        page.keyboard.press("Escape")
        return
    page.get_by_role("button", name="Columns").first.click()
    page.screenshot(path=str(Path(os.environ.get("FUSS_SCREENSHOT_DIR", ".")) / "columns.png"))
    raise AssertionError(f"the Columns menu never offered '{name}'")


CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_shipped_searches_validate() -> None:
    for path in sorted((Path(__file__).resolve().parents[2] / "configs/searches").glob("*.yaml")):
        spec = load_search(path)
        assert spec.search.num_samples >= 1
