"""Paths only the driver's machine has are refused before any actor starts."""

from pathlib import Path

import pytest

from fuss_ray.federation.nodes import first_unshared, missing_paths, probe_nodes


def test_the_first_path_a_node_lacks_is_named_with_its_node_and_the_fix() -> None:
    paths = {"features.cache_dir": "/cache/train-1", "--out": "/runs/r"}
    assert first_unshared(paths, {"10.0.0.1 (aa)": [], "10.0.0.2 (bb)": []}) is None
    line = first_unshared(paths, {"10.0.0.1 (aa)": [], "10.0.0.2 (bb)": ["--out"]})
    assert line == (
        "--out: /runs/r is not there on node 10.0.0.2 (bb), only on the driver's machine; "
        "put it on storage every node mounts at the same path (docs/cluster.md)"
    )
    line = first_unshared(paths, {"10.0.0.2 (bb)": ["--out", "features.cache_dir"]})
    assert line is not None and line.startswith("features.cache_dir: /cache/train-1")
    assert line.endswith("or set federation.feature_transport: object_store")


@pytest.mark.ray
def test_the_probe_runs_on_every_node(tmp_path: Path, ray_session: None) -> None:
    paths = {"here": str(tmp_path), "gone": str(tmp_path / "absent")}
    assert missing_paths(paths) == ["gone"]
    found = probe_nodes(paths)
    assert len(found) == 1 and list(found.values()) == [["gone"]]
