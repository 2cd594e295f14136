from pathlib import Path

import pytest

from fuss_ray.config import absolute_uri, load_config, resolve_paths
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
        ("data.dataset=folder", "data.root: required for dataset 'folder'"),
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


def test_relative_paths_resolve_against_the_base_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule: paths in a config are relative to where the command runs, made absolute."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(
        ROOT / "configs/quickstart.yaml",
        [
            "data.dataset=folder",
            "data.root=~/data/scenes",
            "systems.speed_trace=traces/speed.json",
            "systems.availability_trace=/abs/avail.json",
        ],
        base=tmp_path,
    )
    assert cfg.features.cache_dir == tmp_path / ".fuss_cache"
    assert cfg.data.root == tmp_path / "home" / "data" / "scenes"
    assert cfg.features.weights == "package:efficientnet-lite0"  # a package, not a path
    assert cfg.systems.speed_trace == tmp_path / "traces" / "speed.json"
    assert cfg.systems.availability_trace == Path("/abs/avail.json")
    # The default store is filled in, so that a Tune trial (in its own folder) uses it too.
    assert cfg.tracking.uri == f"sqlite:///{tmp_path}/mlflow.db"
    again = resolve_paths(cfg, tmp_path / "elsewhere")  # absolute paths stay as they are
    assert again == cfg
    weights = load_config(None, ["features.weights=w/dino.pth"], base=tmp_path).features
    assert weights.weights == str(tmp_path / "w" / "dino.pth")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert load_config(None, base=tmp_path).tracking.uri == f"sqlite:///{tmp_path}/env.db"
    assert load_config(None, ["tracking=off"], base=tmp_path).tracking.uri is None


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", "sqlite:///BASE/mlflow.db"),
        ("sqlite:///runs/x.db", "sqlite:///BASE/runs/x.db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("file:mlruns", "file://BASE/mlruns"),
        ("file:///abs/mlruns", "file:///abs/mlruns"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("postgresql://u@db/mlflow", "postgresql://u@db/mlflow"),
    ],
)
def test_store_uris_with_relative_paths_become_absolute(
    uri: str, expected: str, tmp_path: Path
) -> None:
    assert absolute_uri(uri, tmp_path) == expected.replace("BASE", str(tmp_path))


def _leaves(model: object, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, default value) of every leaf of a config, through every section."""
    from pydantic import BaseModel

    assert isinstance(model, BaseModel)
    out: list[tuple[str, object]] = []
    for name, field in type(model).model_fields.items():
        key = f"{prefix}{field.alias or name}"
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.extend(_leaves(value, f"{key}."))
        else:
            out.append((key, value))
    return out


def test_every_leaf_of_every_section_can_be_set_alone() -> None:
    """`--set a.b.c=v` with nothing else works for every leaf (loss.weights.knn was
    refused for the two weights it did not name)."""
    import json

    from fuss_ray.config import RunConfig, apply_override, validate_config

    leaves = _leaves(RunConfig())
    assert "loss.weights.knn" in dict(leaves) and "federation.fedbuff.buffer_size" in dict(leaves)
    for key, value in leaves:
        tree: dict[str, object] = {}
        plain = value.model_dump() if hasattr(value, "model_dump") else value
        apply_override(tree, f"{key}={json.dumps(plain, default=str)}")
        node: object = validate_config(tree).to_dict()
        for part in key.split("."):
            assert isinstance(node, dict), key
            node = node[part]
        assert node == json.loads(json.dumps(plain, default=str)), key


def _dataset_trees() -> list[dict[str, object]]:
    """A minimal `data` section of every registered dataset (a root where it needs one)."""
    from fuss_ray.plugins import DATASETS

    trees: list[dict[str, object]] = []
    for name in sorted(DATASETS):
        params = DATASETS[name].Params
        needs_root = "root" in params.model_fields and params.model_fields["root"].is_required()
        trees.append({"dataset": name, **({"root": "/data/x"} if needs_root else {})})
    return trees


def test_every_setting_of_every_dataset_can_be_set_alone() -> None:
    """Each dataset's section is its adapter's own model: every leaf of each, set alone
    with `--set`, comes back as set."""
    import json

    from fuss_ray.config import apply_override, validate_config

    trees = _dataset_trees()
    assert len(trees) >= 6
    for data in trees:
        params = validate_config({"data": data}).data
        for key, value in _leaves(params, "data."):
            if key == "data.dataset":
                continue
            tree: dict[str, object] = {"data": dict(data)}
            plain = json.loads(json.dumps(value, default=str))
            apply_override(tree, f"{key}={json.dumps(plain)}")
            got = validate_config(tree).to_dict()["data"][key.removeprefix("data.")]
            assert got == plain, (data["dataset"], key)


def test_a_setting_of_another_dataset_is_one_line_that_names_it() -> None:
    from fuss_ray.config import load_config

    with pytest.raises(UserError) as err:
        load_config(None, ["data.dataset=folder", "data.root=/x", "data.num_images=40"])
    text = str(err.value)
    assert "data.num_images: not a setting of dataset 'folder'" in text and "\n" not in text
    assert "root" in text.split("its settings:")[1]
    foreign = r"data\.curated_list: not a setting of dataset 'synthetic'"
    with pytest.raises(UserError, match=foreign):
        load_config(None, ["data.curated_list=mine.txt"])
    # A config written whole by an earlier version holds every dataset's settings at their
    # defaults: those load (see LEGACY_DATA_DEFAULTS); the same key set otherwise does not.
    assert load_config(None, ["data.curated_list=Coco164kFull_Stuff_Coarse_7.txt"]).data == (
        load_config(None).data
    )


def test_one_loss_weight_set_alone_keeps_the_others() -> None:
    from fuss_ray.config import load_config

    cfg = load_config(None, ["loss.weights.knn=0", "loss.shifts.self=0.5"])
    assert (cfg.loss.weights.self_, cfg.loss.weights.knn, cfg.loss.weights.rand) == (0.67, 0, 0.63)
    assert (cfg.loss.shifts.self_, cfg.loss.shifts.knn) == (0.5, 0.02)
