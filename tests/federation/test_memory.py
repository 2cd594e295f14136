"""A run that cannot fit is refused before any actor starts, with both numbers."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fuss_ray.cli.main import main
from fuss_ray.config import validate_config
from fuss_ray.errors import UserError
from fuss_ray.federation.client import HostSpec
from fuss_ray.federation.memory import (
    CLIENT_OVERHEAD,
    DRIVER,
    HOST_PRIVATE,
    RAY_SYSTEM,
    SHARED_LIBS,
    check_memory,
    estimate_memory,
    memory_limit,
)

from ..conftest import tiny_config_dict


def _spec(tmp_path: Path, clients: dict[int, list[int]]) -> HostSpec:
    (tmp_path / "meta.json").write_text(json.dumps({"feature_shape": [10, 2, 2]}))
    return HostSpec({}, str(tmp_path), clients)


def test_estimate_adds_up_by_hand(tmp_path: Path) -> None:
    # knn_k 2, batch 4, code_dim 8
    cfg = validate_config(tiny_config_dict(tmp_path, **{"federation.strategy": "moon"}))
    spec = _spec(tmp_path, {0: [0, 1, 2], 1: [3, 4, 5, 6, 7]})
    est = estimate_memory(cfg, spec, hosts=2, state_bytes=1000, eval_images=8, start_local_ray=True)
    # positions + 2 kNN partners per image, 8 bytes each; MOON keeps one state per client
    assert est.client_bytes == (8 * 3 * 3 + 8 * 5 * 3) + 2 * CLIENT_OVERHEAD + 2 * 1000
    batch = 2 * 4 * (10 + 8) * 2 * 2 * 4
    assert est.per_host == HOST_PRIVATE + 3 * 1000 + 8 * batch
    assert est.driver == DRIVER + 4 * 1000 + 8 * 32 * 32
    assert est.shared == SHARED_LIBS + RAY_SYSTEM
    assert est.total == 2 * est.per_host + est.client_bytes + est.driver + est.shared
    stateless = validate_config(tiny_config_dict(tmp_path))  # fuss-maximin keeps nothing
    plain = estimate_memory(stateless, _spec(tmp_path, spec.clients), 2, 1000, 8, False)
    assert est.client_bytes - plain.client_bytes == 2 * 1000
    assert plain.shared == SHARED_LIBS
    # a stack of 4 clients holds four of everything a client trains with
    stacked = validate_config({**tiny_config_dict(tmp_path), "federation": {"client_batch": 4}})
    est4 = estimate_memory(stacked, _spec(tmp_path, spec.clients), 2, 1000, 8, False)
    assert est4.per_host == HOST_PRIVATE + 4 * (3 * 1000 + 8 * batch)


def test_a_thousand_single_client_actors_do_not_fit_here(tmp_path: Path) -> None:
    cfg = validate_config(tiny_config_dict(tmp_path, **{"federation.executor": "ray"}))
    spec = _spec(tmp_path, {c: [c] for c in range(1000)})
    est = estimate_memory(
        cfg, spec, hosts=1000, state_bytes=10_000, eval_images=8, start_local_ray=True
    )
    limit, source = memory_limit(cfg)
    assert source == "free memory on this machine"
    with pytest.raises(UserError) as err:
        check_memory(est, limit, source)
    assert f"needs about {est.total / 2**30:.1f} GiB (1000 host(s) x 0.54 GiB" in str(err.value)
    assert f"but {limit / 2**30:.1f} GiB is available (free memory on this machine)" in str(
        err.value
    )


def test_refused_run_starts_no_actor_and_prints_one_line(
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import fuss_ray.simulation as simulation

    def no_loop(*args: Any) -> None:
        raise AssertionError("a round loop was built for a run that does not fit")

    monkeypatch.setattr(simulation, "make_loop", no_loop)
    cfg = tiny_config_dict(
        cache_dir, **{"federation.executor": "ray", "federation.memory_limit_gb": 0.5}
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("fuss-ray: error: federation: this run needs about ")
    assert err[0].count("GiB is available (federation.memory_limit_gb)") == 1
    assert "but 0.5 GiB" in err[0]
