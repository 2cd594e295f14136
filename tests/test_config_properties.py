"""Property-based: any config tree either validates or fails with one line naming a key."""

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuss_ray.cli.main import main
from fuss_ray.config import RunConfig, validate_config
from fuss_ray.errors import UserError

from .conftest import tiny_config_dict

SECTIONS = {
    "data": ["dataset", "num_images", "num_classes", "image_size", "regions", "root"],
    "partition": ["kind", "num_clients", "alpha", "min_images", "classes_per_client"],
    "features": ["backbone", "pretrained", "weights", "input_size", "label_size"],
    "model": ["code_dim", "num_centroids", "dropout"],
    "train": ["rounds", "local_steps", "batch_size", "lr_head"],
    "federation": [
        "strategy",
        "fraction",
        "clients_per_actor",
        "num_cpus",
        "server_momentum",
        "head_aggregation",
        "max_update_norm",
    ],
    "tracking": ["enabled", "uri", "overlays"],
}

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10_000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.integers(-3, 70), max_size=3),
    st.sampled_from(
        [
            "iid",
            "dirichlet",
            "fedprox",
            "ot-match",
            "median",
            "synthetic",
            "folder",
            "off",
            {"name": "fedprox", "mu": -1},
            {"name": "moon"},
        ]
    ),
)


@st.composite
def config_trees(draw: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "bogus"]), max_size=4)):
        keys = [*SECTIONS.get(section, ["x"]), "unknown_key"]
        chosen = draw(st.lists(st.sampled_from(keys), max_size=3))
        tree[section] = {k: draw(values) for k in chosen}
    if draw(st.booleans()):
        tree["seed"] = draw(values)
    return tree


@settings(max_examples=300, derandomize=True, deadline=None)
@given(config_trees())
def test_any_tree_validates_or_names_the_problem_in_one_line(tree: dict[str, Any]) -> None:
    try:
        cfg = validate_config(tree, "cfg.yaml")
    except UserError as err:
        text = str(err)
        assert text.startswith("cfg.yaml: ") and "\n" not in text and len(text) < 400
        return
    assert isinstance(cfg, RunConfig)
    # A valid config survives a round trip through its own resolved form.
    assert validate_config(cfg.to_dict()).to_dict() == cfg.to_dict()


@st.composite
def valid_small_runs(draw: Any) -> list[str]:
    """--set overrides of the tiny config that any user could write; all validate."""
    from fuss_ray.federation.strategies import STRATEGIES

    choices: dict[str, Any] = {
        "federation.strategy": st.sampled_from(sorted(STRATEGIES)),
        "partition.kind": st.sampled_from(
            ["iid", "dirichlet", "pathological", "natural", "quantity"]
        ),
        "partition.num_clients": st.integers(1, 8),
        "partition.alpha": st.sampled_from([0.01, 0.1, 1.0, 100.0]),
        "partition.min_images": st.integers(1, 6),
        "partition.classes_per_client": st.integers(1, 4),
        "federation.fraction": st.sampled_from([0.1, 0.5, 1.0]),
        "federation.min_clients": st.integers(1, 10),
        "federation.head_aggregation": st.sampled_from(["mean", "median", "trimmed_mean"]),
        "federation.server_momentum": st.sampled_from([0.0, 0.9]),
        "federation.max_update_norm": st.sampled_from([None, 1e-6, 100.0]),
        "model.num_centroids": st.sampled_from([None, 2, 7]),
        "train.rounds": st.integers(1, 2),
        "train.local_steps": st.integers(1, 2),
        "train.batch_size": st.integers(1, 40),
        "loss.feature_samples": st.integers(1, 12),
        "loss.knn_k": st.integers(1, 40),
        "checkpoint.every": st.integers(0, 2),
        "tracking.overlays": st.integers(0, 2),
    }
    picked = draw(st.lists(st.sampled_from(sorted(choices)), unique=True, max_size=8))
    return [f"{k}={yaml.safe_dump(draw(choices[k])).splitlines()[0]}" for k in picked]


@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(overrides=valid_small_runs())
def test_valid_configs_run_or_fail_in_one_line(
    overrides: list[str], cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whole runs, not just validation: a valid config never ends in a traceback.

    A config can be valid yet unsatisfiable by its data (more clients than images, a
    min_images no split can meet): that is a one-line error with exit code 2, never a
    crash (an uncaught exception fails this test).
    """
    out = tmp_path_factory.mktemp("prop")
    cfg = out / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_dict(cache_dir, tracking=False)))
    with (
        contextlib.redirect_stderr(io.StringIO()) as err,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        code = main(
            [
                "run",
                str(cfg),
                "--out",
                str(out / "run"),
                "--quiet",
                *[a for o in overrides for a in ("--set", o)],
            ]
        )
    lines = err.getvalue().strip().splitlines()
    if code == 0:
        assert (out / "run" / "summary.json").is_file()
    else:
        assert code == 2, (overrides, err.getvalue())
        errors = [line for line in lines if line.startswith("fuss-ray: error: ")]
        assert len(errors) == 1, (overrides, lines)
