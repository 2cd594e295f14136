"""The round loop in a server actor: where it runs, what it reserves, how it fails.

Its results are pinned elsewhere: the Ray runs of tests/test_recovery.py, the FedBuff and
reduction tests compare a server-actor run with the sequential one bit for bit, through
host kills, a server kill and `--resume`.
"""

import os
import time
from pathlib import Path
from typing import Any

import pytest

from fuss_ray.config import validate_config
from fuss_ray.errors import SimulationError, UserError
from fuss_ray.federation.server_actor import (
    ActorLoop,
    resolve_node,
    server_bundle,
    server_options,
    uses_server_actor,
)
from fuss_ray.simulation import run_simulation

from ..conftest import tiny_config_dict


def _fed(cache_dir: Path, **extra: Any) -> Any:
    tree = tiny_config_dict(cache_dir, **{"federation.executor": "ray", **extra})
    return validate_config(tree).federation


def test_the_server_actor_reserves_its_own_share_on_the_head_node(cache_dir: Path) -> None:
    fed = _fed(cache_dir)
    assert server_bundle(fed) == {"CPU": 1.0}
    options = server_options(fed.server)
    assert options["num_cpus"] == 1.0 and options["max_restarts"] == 0
    assert options["resources"] == {"node:__internal_head__": 0.001}
    # Custom resources choose the node instead (a GPU node, a worker with the data).
    pinned = _fed(cache_dir, **{"federation.server.resources": {"big": 1}})
    assert server_options(pinned.server)["resources"] == {"big": 1}
    assert server_bundle(pinned) == {"CPU": 1.0, "big": 1}
    # Sequential runs and `server.actor: false` keep the loop in the driver.
    assert server_bundle(_fed(cache_dir, **{"federation.server.actor": False})) == {}
    assert not uses_server_actor(_fed(cache_dir, **{"federation.executor": "sequential"}))


def test_server_resources_are_checked_like_the_hosts() -> None:
    with pytest.raises(UserError) as err:
        validate_config({"federation": {"server": {"resources": {"CPU": 2}}}})
    assert str(err.value) == (
        "config: federation.server.resources: 'CPU' is set by num_cpus/num_gpus, not resources"
    )
    with pytest.raises(UserError, match=r"^config: federation.server.num_cpus: "):
        validate_config({"federation": {"server": {"num_cpus": -1}}})


@pytest.mark.ray
def test_a_run_refused_for_the_server_actors_cpu_says_so(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    import ray

    cpus = ray.cluster_resources()["CPU"]
    # Hosts alone fit the session's CPUs exactly; with the server actor they do not.
    tree = tiny_config_dict(
        cache_dir,
        **{
            "federation.executor": "ray",
            "federation.clients_per_actor": 1,
            "federation.num_cpus": cpus / 4,
            "tracking": False,
        },
    )
    with pytest.raises(UserError) as err:
        run_simulation(validate_config(tree), tmp_path / "out", show_progress=False)
    assert str(err.value) == (
        f"federation: 4 actors x {cpus / 4:g} CPU (+ 1 for the server actor) need "
        f"{cpus + 1:g} CPU but the cluster has {cpus:g}; raise federation.clients_per_actor "
        "or lower federation.num_cpus"
    )


@pytest.mark.ray
def test_server_node_names_a_node_by_id_or_address(ray_session: None) -> None:
    import ray

    node = ray.nodes()[0]
    assert resolve_node(node["NodeID"]) == node["NodeID"]
    assert resolve_node(node["NodeManagerAddress"]) == node["NodeID"]
    with pytest.raises(UserError, match=r"^federation.server.node: no live node .*'nowhere'"):
        resolve_node("nowhere")


class _Failing:
    """A stand-in server actor whose calls fail the ways a LocalLoop's can."""

    def call(self, method: str, *args: Any) -> Any:  # as ServerHost forwards them
        return getattr(self, method)(*args)

    def user(self) -> None:
        raise UserError("federation: a path some node cannot see")

    def crash(self) -> None:
        raise RuntimeError("a bug")

    def die(self) -> None:
        os._exit(1)

    def busy(self, seconds: float) -> None:  # a long round
        time.sleep(seconds)

    def shutdown(self) -> None:
        """What a LocalLoop's shutdown is asked: it waits its turn behind `busy`."""


@pytest.mark.ray
def test_the_actors_errors_reach_the_driver_as_one_line(ray_session: None, tmp_path: Path) -> None:
    import ray

    loop = ActorLoop.__new__(ActorLoop)  # the forwarding alone, on a stand-in actor
    loop.actor = ray.remote(_Failing).options(num_cpus=0, max_restarts=0).remote()
    loop.checkpoints, loop.server_round = tmp_path / "out" / "checkpoints", 3
    with pytest.raises(UserError) as err:
        loop._call("user")
    assert str(err.value) == "federation: a path some node cannot see"  # no traceback
    with pytest.raises(RuntimeError, match="a bug"):  # a bug keeps its traceback
        loop._call("crash")
    with pytest.raises(SimulationError) as died:
        loop._call("die")
    assert str(died.value) == (
        "the server actor died in round 3, before any checkpoint: run it again"
    )


@pytest.mark.ray
def test_a_users_error_while_the_server_actor_starts_is_one_line(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    """Raised inside the actor as it builds its hosts (past the driver's own checks, which
    this test skips by building the loop directly)."""
    from fuss_ray.simulation import server_parts, set_up

    tree = tiny_config_dict(
        cache_dir,
        **{
            "federation.executor": "ray",
            "federation.num_cpus": 0.5,
            "federation.resources": {"nowhere": 1},
            "tracking": False,
        },
    )
    setup = set_up(validate_config(tree), tmp_path / "out", False, False)
    with pytest.raises(UserError) as err:
        ActorLoop(server_parts(setup))
    assert str(err.value) == (
        "federation.resources: 2 actors x 1 nowhere need 2 nowhere but the cluster has 0"
    )


@pytest.mark.ray
def test_an_abandoned_run_kills_the_server_actor_without_waiting_for_its_round(
    ray_session: None, tmp_path: Path
) -> None:
    import ray

    loop = ActorLoop.__new__(ActorLoop)
    loop.actor = ray.remote(_Failing).options(num_cpus=0, max_restarts=0).remote()
    loop.group = None
    round_in_progress = loop.actor.call.remote("busy", 120)
    started = time.monotonic()
    loop.shutdown(wait=False)  # Ctrl-C in the middle of a round
    assert time.monotonic() - started < 10
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(round_in_progress, timeout=30)


@pytest.mark.ray
def test_without_a_server_actor_the_driver_runs_the_rounds(
    cache_dir: Path, tmp_path: Path, ray_session: None
) -> None:
    tree = tiny_config_dict(
        cache_dir,
        **{
            "federation.executor": "ray",
            "federation.num_cpus": 0.5,
            "federation.server.actor": False,
            "train.rounds": 1,
            "tracking": False,
        },
    )
    summary = run_simulation(validate_config(tree), tmp_path / "out", show_progress=False)
    assert summary["server"]["actor"] is False and summary["server"]["pid"] == os.getpid()
    assert len(summary["actors"]) == 2  # the hosts are Ray actors all the same
