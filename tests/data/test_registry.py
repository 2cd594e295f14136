"""Dataset names come from the registry: a new adapter needs no edit of the config."""

from __future__ import annotations

import pytest

from fuss_ray.config import validate_config
from fuss_ray.data.base import register_dataset
from fuss_ray.data.synthetic import SyntheticScenes
from fuss_ray.errors import UserError
from fuss_ray.plugins import DATASETS


def test_a_registered_adapter_is_a_valid_data_dataset_and_an_unknown_one_is_one_line() -> None:
    with pytest.raises(UserError, match=r"data\.dataset: must be one of: .*synthetic") as err:
        validate_config({"data": {"dataset": "more-scenes"}}, "cfg")
    assert "\n" not in str(err.value)

    @register_dataset
    class MoreScenes(SyntheticScenes):
        dataset = "more-scenes"

    try:
        assert validate_config({"data": {"dataset": "more-scenes"}}, "cfg").data.dataset == (
            "more-scenes"
        )
        assert DATASETS["more-scenes"] is MoreScenes
    finally:
        DATASETS._items.pop("more-scenes", None)
        DATASETS._local.discard("more-scenes")
