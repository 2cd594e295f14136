"""The Python API: the same run as the command line, results as an object, errors raised."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fuss_ray
from fuss_ray.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SETS = [
    "data.num_images=40",
    "data.num_eval_images=8",
    "partition.num_clients=4",
    "train.rounds=2",
    "train.local_steps=2",
    "federation.executor=sequential",
    "federation.strategy=ot-match",
    "tracking=false",
]


@pytest.mark.slow
def test_run_from_python_gives_what_the_command_line_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    argv = [sys.executable, "-m", "fuss_ray.cli.main", "run", "configs/quickstart.yaml"]
    for s in SETS:
        argv += ["--set", s]
    cli = subprocess.run(
        [*argv, "--out", "runs/cli", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    from_cli = json.loads((tmp_path / "runs/cli/summary.json").read_text())

    monkeypatch.chdir(tmp_path)  # relative paths resolve here, as for the command
    seen: list[dict[str, Any]] = []
    config = fuss_ray.load_config("configs/quickstart.yaml", overrides=SETS)
    result = fuss_ray.run(config, "runs/api", progress=False, on_round=seen.append)
    assert isinstance(result, fuss_ray.RunResult)
    assert result.out == tmp_path / "runs/api"
    assert result.final == from_cli["final"]
    assert [r["round"] for r in result.rounds] == [1, 2]
    assert [r["round"] for r in seen] == [1, 2]  # each round as it ended
    assert seen[-1]["val_miou"] == result.rounds[-1]["val_miou"]


def test_overrides_as_a_dict_are_the_strings_they_stand_for() -> None:
    as_strings = fuss_ray.load_config(
        ROOT / "configs/quickstart.yaml",
        ["train.rounds=3", "federation.strategy.name=fedprox", "federation.strategy.mu=0.01"],
    )
    as_dict = fuss_ray.load_config(
        ROOT / "configs/quickstart.yaml",
        {"train.rounds": 3, "federation.strategy.name": "fedprox", "federation.strategy.mu": 0.01},
    )
    assert as_dict == as_strings
    tree = as_strings.to_dict()
    assert fuss_ray.load_config(tree) == as_strings
    assert fuss_ray.load_config(as_strings, ["train.rounds=4"]).train.rounds == 4


def test_errors_are_raised_in_one_line() -> None:
    with pytest.raises(UserError, match=r"train\.rounds") as err:
        fuss_ray.load_config(ROOT / "configs/quickstart.yaml", ["train.rounds=0"])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="config file not found"):
        fuss_ray.load_config("no/such/config.yaml")
    assert fuss_ray.register_strategy is not None
    with pytest.raises(AttributeError):
        _ = fuss_ray.no_such_name  # type: ignore[attr-defined]


def test_every_registered_built_in_strategy_is_importable_from_fuss_ray_strategies() -> None:
    import fuss_ray.strategies as public

    built_in = {
        name: cls
        for name, cls in public.STRATEGIES.items()
        if cls.__module__.startswith("fuss_ray.federation.strategies.")
    }
    assert len(built_in) == 9
    exported = [getattr(public, n) for n in public.__all__]
    assert all(cls in exported for cls in built_in.values())


def _in_main(source: str) -> Any:
    """The class a notebook cell (or a script's __main__) defines: module `__main__`, so
    no other process can import it."""
    scope: dict[str, Any] = {"__name__": "__main__"}
    exec(source, scope)  # the test's own fixed source
    return scope["Renamed"]


def test_a_subclass_that_only_renames_needs_no_params_class() -> None:
    from fuss_ray.strategies import STRATEGIES, FedProx

    cls = _in_main(
        "from fuss_ray.strategies import FedProx\n"
        "class Renamed(FedProx):\n"
        "    name = 'prox-renamed'\n"
    )
    params = cls.Params.model_validate({"name": "prox-renamed", "mu": 0.5})
    assert params.mu == 0.5 and issubclass(cls.Params, FedProx.Params)
    with pytest.raises(ValueError):
        cls.Params.model_validate({"name": "fedprox"})  # its own name, not its parent's
    with pytest.raises(ValueError):
        cls.Params.model_validate({"name": "prox-renamed", "no_such": 1})
    assert FedProx.Params.model_validate({"name": "fedprox"}).name == "fedprox"
    assert "prox-renamed" not in STRATEGIES  # defined, not registered


def test_a_strategy_defined_in_main_runs_on_ray_and_equals_fedavg_bit_for_bit(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    import numpy as np

    from fuss_ray.plugins import STRATEGIES, shipment
    from tests.conftest import tiny_config_dict

    assert shipment() is None  # nothing local registered: nothing travels
    cls = _in_main(
        "import fuss_ray\n"
        "from fuss_ray.strategies import FedAvg\n"
        "@fuss_ray.register_strategy\n"
        "class Renamed(FedAvg):\n"
        "    name = 'fedavg-from-main'\n"
    )
    try:
        assert cls.__module__ == "__main__" and shipment() is not None

        def run(strategy: str, executor: str) -> fuss_ray.RunResult:
            tree = tiny_config_dict(
                cache_dir,
                **{
                    "tracking": False,
                    "federation.strategy": strategy,
                    "federation.executor": executor,
                    "federation.num_cpus": 0.5,
                },
            )
            config = fuss_ray.load_config(tree)
            return fuss_ray.run(config, tmp_path / f"{strategy}-{executor}", progress=False)

        mine, fedavg = run("fedavg-from-main", "ray"), run("fedavg", "sequential")
        assert mine.summary["strategy"] == "fedavg-from-main"
        assert mine.final == fedavg.final
        a, b = np.load(mine.out / "final_state.npz"), np.load(fedavg.out / "final_state.npz")
        with a, b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                assert np.array_equal(a[key], b[key]), key
    finally:
        STRATEGIES._items.pop("fedavg-from-main", None)
        STRATEGIES._local.discard("fedavg-from-main")
