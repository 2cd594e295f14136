"""Where the round loop runs: in this process, or in a server actor on the cluster.

With `federation.executor: ray` the rounds run in a server actor by default: the driver
(the `fuss-ray run` process, or a `ray job submit` entrypoint) starts it, asks it for one
round at a time, shows progress, logs to MLflow, and collects the result. The server actor
builds the client hosts itself, so the hosts are its actors: their reduced contributions
come to it as object references and never pass through the driver, and when it dies they
die with it. It also writes the checkpoints, which therefore never travel either.

MLflow logging stays in the driver: the driver owns the run's lifecycle (started, resumed,
KILLED on Ctrl-C, FAILED when the server actor dies) and the credentials and tracking URI
the user gave, and a `sqlite:///` store on the driver's disk is not reachable from a server
actor on another node. The driver logs each round before it asks for a checkpoint of it,
so MLflow always holds every round a checkpoint holds.

Inside a Ray Tune trial the trial hosts the loop itself (`LocalLoop` with Ray hosts): the
trial already is a Ray actor, holding bundle 0 of the placement group Tune reserved for it,
and a scheduler that stops or pauses the trial must stop its rounds with it.

`LocalLoop` is the loop; `ActorLoop` runs one `LocalLoop` in a Ray actor and forwards the
same calls, so the round loop, checkpoints and `summary.json` cannot tell them apart.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fuss_ray.config import FederationConfig, RunConfig, ServerConfig
from fuss_ray.errors import SimulationError, UserError
from fuss_ray.features.cache import FeatureStore
from fuss_ray.federation.checkpoint import Checkpoint, CheckpointWriter, latest_checkpoint
from fuss_ray.federation.client import HostSpec
from fuss_ray.federation.executor import (
    Executor,
    RayExecutor,
    SequentialExecutor,
    resource_bundle,
)
from fuss_ray.federation.server import RoundResult, Server
from fuss_ray.federation.strategies import Strategy
from fuss_ray.federation.types import ModelState
from fuss_ray.metrics.evaluate import evaluate_variants
from fuss_ray.models.head import FussModel


@dataclass
class ServerParts:
    """Everything the server needs, built by the driver before any actor starts."""

    config: RunConfig
    strategy: Strategy[Any]
    spec: HostSpec
    eval_store: FeatureStore | None  # the test split (None: never read)
    val_store: FeatureStore | None
    model: FussModel
    initial: ModelState
    checkpoints: Path  # OUT/checkpoints


@dataclass
class ServerView:
    """What finishing a run reads of the server, as plain data the driver can hold."""

    model: FussModel
    scored: dict[int | None, ModelState]  # the global model (key None) or each client's
    participation: dict[int, int]
    last_loss: dict[int, float]
    budget: dict[str, Any]  # the strategy's own part of summary.json's `budget`
    clients_per_round: int
    variants: dict[str, Any]  # flip-TTA / CRF scores of the global model (if enabled)


def make_executor(config: RunConfig, spec: HostSpec) -> Executor:
    """The client hosts: in this process, or Ray actors owned by this process."""
    if config.federation.executor == "sequential":
        return SequentialExecutor(spec)
    return RayExecutor(spec, config.federation, server_bundle(config.federation))


def server_bundle(fed: FederationConfig) -> dict[str, float]:
    """What the server actor reserves beside the hosts (nothing when there is none)."""
    if not uses_server_actor(fed):
        return {}
    s = fed.server
    return resource_bundle(s.num_cpus, s.num_gpus, s.resources)


def uses_server_actor(fed: FederationConfig) -> bool:
    """A Ray run with `server.actor` runs its rounds in a server actor, except inside a Tune
    trial (or any actor holding a placement group), which hosts the loop itself."""
    if fed.executor != "ray" or not fed.server.actor:
        return False
    import ray

    return not (ray.is_initialized() and ray.util.get_current_placement_group() is not None)


def final_variants(
    config: RunConfig, model: FussModel, scored: dict[int | None, ModelState], store: Any
) -> dict[str, Any]:
    """Final scores with and without flip TTA and CRF (only those enabled; global model).

    Local-only training has no single model to refine, so it reports the plain scores only.
    """
    ev = config.evaluation
    if not (ev.flip_tta or ev.crf) or None not in scored or store is None:
        return {}
    return evaluate_variants(
        model,
        scored[None],
        store,
        config.data.num_classes,
        flip=ev.flip_tta,
        crf_iterations=ev.crf_iterations if ev.crf else None,
    )


class RoundLoop(ABC):
    """The calls the driver makes of the round loop, wherever it runs."""

    @abstractmethod
    def run_round(self, server_round: int) -> RoundResult:
        """Sample, train, aggregate and score one round."""

    @abstractmethod
    def checkpoint(self, server_round: int, meta: dict[str, Any]) -> None:
        """Write round `server_round`'s checkpoint; `meta` is the driver's part of it."""

    @abstractmethod
    def restore(self, ckpt: Checkpoint) -> None:
        """Continue exactly where the checkpoint left the server."""

    @abstractmethod
    def evaluate_result(self, server_round: int) -> RoundResult:
        """Scores of the current state with no training (a run resumed after its end)."""

    @abstractmethod
    def view(self) -> ServerView:
        """The final state, for `summary.json` and the artifacts."""

    @abstractmethod
    def placement(self) -> list[dict[str, Any]]:
        """Per client host: its node and how many clients it holds."""

    @abstractmethod
    def transport(self) -> str:
        """How the hosts reach the training features."""

    @abstractmethod
    def where(self) -> dict[str, Any]:
        """Where the loop runs, for summary.json: `{actor, pid, node_id}`."""

    @abstractmethod
    def host_pids(self) -> list[int]:
        """The process of each Ray client host (none in-process)."""

    @abstractmethod
    def shutdown(self, wait: bool = True) -> None:
        """Release the hosts (and the server actor). `wait=False`: the run is being
        abandoned (Ctrl-C, a failure), so nothing waits for a round in progress."""


def _node_id() -> str | None:
    """The Ray node this process runs on; None outside Ray (which a sequential run need
    not even have installed: a process that never imported it is in no cluster)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())


class LocalLoop(RoundLoop):
    """The round loop in this process: the driver's, a Tune trial's or the server actor's."""

    def __init__(self, parts: ServerParts, in_actor: bool = False) -> None:
        self.parts = parts
        self.in_actor = in_actor
        config = parts.config
        if in_actor:
            import torch

            # The rule the driver follows (and that the bit-identity tests pin down).
            torch.set_num_threads(1)
        self.executor = make_executor(config, parts.spec)
        self.server = Server(
            config,
            parts.strategy,
            self.executor,
            list(parts.spec.clients),
            parts.eval_store,
            parts.model,
            parts.initial,
            parts.val_store,
        )
        self.writer = CheckpointWriter(parts.checkpoints, config.checkpoint.keep)

    def run_round(self, server_round: int) -> RoundResult:
        return self.server.run_round(server_round)

    def checkpoint(self, server_round: int, meta: dict[str, Any]) -> None:
        """Hosts write their clients' state, then the server's part publishes the folder."""
        staging = self.writer.staging(server_round)
        # The server's part first: an asynchronous server may still train clients for it,
        # and the hosts must then save their clients' state as that training left it.
        arrays, server_meta = self.server.export()
        client_files = self.executor.save_clients(staging)
        full = {
            **meta,
            "server": server_meta,
            "client_files": {str(c): f for c, f in client_files.items()},
        }
        self.writer.publish(staging, server_round, arrays, full)

    def restore(self, ckpt: Checkpoint) -> None:
        self.server.restore(ckpt.server_tree(), ckpt.meta["server"])

    def evaluate_result(self, server_round: int) -> RoundResult:
        return self.server.evaluate_result(server_round)

    def view(self) -> ServerView:
        server = self.server
        scored = server.scored_models()
        variants = final_variants(self.parts.config, server.model, scored, server.eval_store)
        return ServerView(
            server.model,
            scored,
            dict(server.participation),
            dict(server.last_loss),
            server.shape.budget(),
            len(server.sample(1)),
            variants,
        )

    def placement(self) -> list[dict[str, Any]]:
        return self.executor.placement()

    def transport(self) -> str:
        return self.executor.transport

    def where(self) -> dict[str, Any]:
        return {"actor": self.in_actor, "pid": os.getpid(), "node_id": _node_id()}

    def host_pids(self) -> list[int]:
        return self.executor.pids() if isinstance(self.executor, RayExecutor) else []

    def placement_group(self) -> Any:
        """The hosts' own placement group, so the driver can remove it if this dies."""
        return getattr(self.executor, "own_pg", None)

    def shutdown(self, wait: bool = True) -> None:
        self.executor.shutdown()


class ServerHost:
    """The server actor: a `LocalLoop` built by `start` rather than by the constructor, since
    Ray reports an error raised in an actor's constructor only as the actor's death, and a
    user's error there (a path some node cannot see, a placement that never comes) must
    reach the driver as its own one line."""

    def start(self, parts: ServerParts) -> None:
        self.loop = LocalLoop(parts, in_actor=True)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.loop, method)(*args)


def server_options(server: ServerConfig) -> dict[str, Any]:
    """The server actor's resources and node: `node` pins it, custom `resources` pick a
    node that has them, and otherwise it runs on the head node (where `ray job submit`
    runs its entrypoint, and where a cluster's storage is most often mounted)."""
    options: dict[str, Any] = {
        "num_cpus": server.num_cpus,
        "num_gpus": server.num_gpus,
        "resources": dict(server.resources),
        # Its state since the last checkpoint is lost with it: the run stops and is
        # resumed from that checkpoint (`--resume`), never continued by a fresh copy.
        "max_restarts": 0,
        "max_task_retries": 0,
    }
    if server.node is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            resolve_node(server.node), soft=False
        )
    elif not server.resources:
        options["resources"]["node:__internal_head__"] = 0.001
    return options


def resolve_node(name: str) -> str:
    """A Ray node id from `federation.server.node`: a node id, or an IP naming one node."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    by_id = [n["NodeID"] for n in alive if n["NodeID"] == name]
    if by_id:
        return str(by_id[0])
    by_ip = [n["NodeID"] for n in alive if n.get("NodeManagerAddress") == name]
    if len(by_ip) == 1:
        return str(by_ip[0])
    if by_ip:
        raise UserError(
            f"federation.server.node: {name} is the address of {len(by_ip)} nodes; "
            "give a node id (`ray list nodes`)"
        )
    raise UserError(
        f"federation.server.node: no live node has the id or address {name!r} "
        f"({len(alive)} node(s) in the cluster)"
    )


class ActorLoop(RoundLoop):
    """A `LocalLoop` in a Ray actor; the driver's calls wait for its answers.

    The actor's own errors that a user can act on (a `UserError`, a `SimulationError`)
    come back as themselves; the actor dying stops the run in one line that says how to
    continue from the last checkpoint.
    """

    def __init__(self, parts: ServerParts) -> None:
        import ray

        self.checkpoints = parts.checkpoints
        self.server_round = 0
        self.group: Any = None
        options = server_options(parts.config.federation.server)
        self.actor: Any = cast(Any, ray.remote(ServerHost)).options(**options).remote()
        try:
            self._get(self.actor.start.remote(parts))
            self.group = self._call("placement_group")
        except BaseException:
            ray.kill(self.actor)  # a loop that could not start holds nothing worth keeping
            raise

    def _call(self, method: str, *args: Any) -> Any:
        """The LocalLoop's `method` in the actor, waited for."""
        return self._get(self.actor.call.remote(method, *args))

    def _get(self, ref: Any) -> Any:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = err.cause
            if isinstance(cause, UserError | SimulationError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError:
            raise SimulationError(self._death_note()) from None

    def _death_note(self) -> str:
        where = f"in round {self.server_round}" if self.server_round else "while starting"
        ckpt = latest_checkpoint(self.checkpoints)
        if ckpt is None:
            return f"the server actor died {where}, before any checkpoint: run it again"
        out = self.checkpoints.parent
        return (
            f"the server actor died {where}; the checkpoint of round {ckpt.round} is whole: "
            f"continue with fuss-ray run --resume {out}"
        )

    def run_round(self, server_round: int) -> RoundResult:
        self.server_round = server_round
        result: RoundResult = self._call("run_round", server_round)
        return result

    def checkpoint(self, server_round: int, meta: dict[str, Any]) -> None:
        self._call("checkpoint", server_round, meta)

    def restore(self, ckpt: Checkpoint) -> None:
        self._call("restore", ckpt)

    def evaluate_result(self, server_round: int) -> RoundResult:
        result: RoundResult = self._call("evaluate_result", server_round)
        return result

    def view(self) -> ServerView:
        view: ServerView = self._call("view")
        return view

    def placement(self) -> list[dict[str, Any]]:
        placed: list[dict[str, Any]] = self._call("placement")
        return placed

    def transport(self) -> str:
        return str(self._call("transport"))

    def where(self) -> dict[str, Any]:
        where: dict[str, Any] = self._call("where")
        return where

    def host_pids(self) -> list[int]:
        return list(self._call("host_pids"))

    def shutdown(self, wait: bool = True) -> None:
        """Stop the hosts, then the server actor; remove the hosts' placement group even
        when the server actor died before it could (Ray keeps an actor's placement groups
        until the job ends). Without `wait` the actor is killed at once, even in the middle
        of a round (its calls run one at a time, so a polite request would wait for the
        round), and its hosts die with it."""
        import contextlib

        import ray

        if wait:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(self.actor.call.remote("shutdown"))
        ray.kill(self.actor)
        if self.group is not None:
            with contextlib.suppress(Exception):
                ray.util.remove_placement_group(self.group)
            self.group = None


def make_loop(parts: ServerParts) -> RoundLoop:
    """The round loop for this run: in a server actor where `uses_server_actor`, else here."""
    fed = parts.config.federation
    if fed.executor == "ray":
        from fuss_ray.federation.executor import connect_ray

        connect_ray(fed)
        if uses_server_actor(fed):
            from fuss_ray.federation.executor import check_resources, pack_clients

            hosts = len(pack_clients(sorted(parts.spec.clients), fed.clients_per_actor))
            check_resources(fed, hosts, None, server_bundle(fed))
            return ActorLoop(parts)
    return LocalLoop(parts)
