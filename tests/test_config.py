from pathlib import Path

import pytest

from fuss_ray.config import load_config
from fuss_ray.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_config_validates() -> None:
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)


def test_overrides_keep_types_and_reach_strategy_params() -> None:
    cfg = load_config(
        ROOT / "configs/quickstart.yaml",
        [
            "train.rounds=3",
            "partition.alpha=0.5",
            "federation.strategy.name=fedprox",
            "federation.strategy.mu=0.01",
            "data.regions=[2, 3]",
            "model.num_centroids=null",
        ],
    )
    assert cfg.train.rounds == 3 and cfg.partition.alpha == 0.5
    assert cfg.federation.strategy == {"name": "fedprox", "mu": 0.01}
    assert cfg.data.regions == (2, 3)
    assert (
        load_config(None, ["federation.strategy=ot-match"]).federation.strategy["method"] == "exact"
    )
    # `tracking: off` in the file, then one of its settings from the command line
    off = load_config(None, ["tracking=off", "tracking.overlays=0"]).tracking
    assert not off.enabled and off.overlays == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("partition.alpha=-1", "partition.alpha: Input should be greater than 0 (got -1)"),
        ("partition.kindd=iid", "unknown key 'partition.kindd'"),
        ("partition.kind=random", "partition.kind"),
        ("train.rounds=many", "train.rounds"),
        ("federation.strategy=fedsgd", "must be one of"),
        ("federation.strategy.bogus=1", "has no setting 'bogus'"),
        ("data.dataset=folder", "data.root is required"),
        ("noequals", "expected KEY=VALUE"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        load_config(ROOT / "configs/quickstart.yaml", [override])
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(bad)
