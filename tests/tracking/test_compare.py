"""`fuss-ray compare` groups finished runs by strategy and setting, mean ± std over seeds."""

from pathlib import Path

import pytest

from fuss_ray.cli.main import main
from fuss_ray.config import validate_config
from fuss_ray.simulation import run_simulation
from fuss_ray.tracking.compare import collect, table_rows

from ..conftest import tiny_config_dict


def test_compare_table_and_plot(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    finals: dict[str, list[float]] = {}
    # fedavg seed 0 runs twice: the re-run replaces the first, it does not count twice.
    for strategy, seed in [
        ("fedavg", 0),
        ("fedavg", 0),
        ("fedavg", 1),
        ("fuss-maximin", 0),
        ("fuss-maximin", 1),
    ]:
        cfg = validate_config(
            tiny_config_dict(
                cache_dir,
                seed=seed,
                tracking={"uri": uri, "experiment": "cmp", "overlays": 0},
                **{"federation.strategy": strategy, "train.rounds": 1},
            )
        )
        s = run_simulation(cfg, tmp_path / f"{strategy}-{seed}", show_progress=False)
        finals.setdefault(f"{strategy}-{seed}", []).append(s["final"]["miou"])
    rows = table_rows(collect(uri, "cmp"))
    assert [(r["strategy"], r["runs"]) for r in rows] == [("fedavg", 2), ("fuss-maximin", 2)]
    assert rows[0]["mean"] == pytest.approx((finals["fedavg-0"][-1] + finals["fedavg-1"][0]) / 2)
    plot = tmp_path / "cmp.png"
    assert main(["compare", "--experiment", "cmp", "--tracking-uri", uri, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "fuss-maximin" in out and "dirichlet" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", "--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "no experiment named 'nope'" in capsys.readouterr().err
