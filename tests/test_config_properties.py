"""Property-based: any config tree either validates or fails with one line naming a key."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fuss_ray.config import RunConfig, validate_config
from fuss_ray.errors import UserError

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
