"""Where client hosts live: in this process (sequential) or in Ray actors.

Both executors expose the same `train` call and return updates sorted by client id, so the
server, the strategies and the results cannot tell them apart.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from fuss_ray.config import FederationConfig
from fuss_ray.errors import SimulationError, UserError
from fuss_ray.federation.client import ClientHost, HostSpec
from fuss_ray.federation.reduction import Reduced
from fuss_ray.federation.types import Broadcast, ClientUpdate

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class FailureReport:
    """What went wrong in one round's training, for the round's metrics."""

    failed_actors: int = 0  # actor failures seen (one actor failing twice counts twice)
    retried_clients: int = 0
    lost_clients: list[int] = field(default_factory=list)  # never trained this round


class Executor(ABC):
    """Where client hosts live. The simulation asks an executor only what this declares."""

    last_failures: FailureReport = FailureReport()
    transport: str = "path"  # how hosts reach the training features ("object_store" on Ray)

    @abstractmethod
    def train(
        self,
        broadcast: Broadcast,
        client_ids: list[int],
        server_round: int,
        keys: dict[int, int] | None = None,
    ) -> list[ClientUpdate]:
        """Every client's whole update, sorted by client id (asynchronous mode, tests)."""

    @abstractmethod
    def train_reduced(
        self,
        broadcast: Broadcast,
        shifts: dict[str, int],
        client_ids: list[int],
        server_round: int,
    ) -> Reduced:
        """Train the clients; each host returns one reduced contribution, merged here."""

    total_samples: int = 0  # training images over all clients (fixes the sum grid)

    @abstractmethod
    def save_clients(self, directory: Path) -> dict[int, str]:
        """Have every host write its clients' persistent state; client id -> file name."""

    def placement(self) -> list[dict[str, Any]]:
        """Per host: the node it runs on and how many clients it holds (none in-process)."""
        return []

    def shutdown(self) -> None:  # noqa: B027  (optional hook)
        """Release hosts; a no-op where there is nothing to release."""


class SequentialExecutor(Executor):
    """All clients in one in-process host: the reference the Ray executor must match."""

    def __init__(self, spec: HostSpec) -> None:
        self.host = ClientHost(spec)
        self.total_samples = sum(len(v) for v in spec.clients.values())

    def train(
        self,
        broadcast: Broadcast,
        client_ids: list[int],
        server_round: int,
        keys: dict[int, int] | None = None,
    ) -> list[ClientUpdate]:
        return self.host.train(broadcast, client_ids, server_round, keys)

    def train_reduced(
        self,
        broadcast: Broadcast,
        shifts: dict[str, int],
        client_ids: list[int],
        server_round: int,
    ) -> Reduced:
        return self.host.train_reduced(broadcast, shifts, client_ids, server_round)

    def save_clients(self, directory: Path) -> dict[int, str]:
        name = "clients-0000.npz"
        return dict.fromkeys(self.host.save(str(directory), name), name)


def gather_round(
    assignment: dict[int, list[int]],
    submit: Callable[[int, list[int]], Any],
    fetch: Callable[[Any], T],
    failures: tuple[type[BaseException], ...],
    policy: str,
    retries: int,
    min_clients: int,
    server_round: int,
    recover: Callable[[int], bool] = lambda host: True,
) -> tuple[list[T], FailureReport]:
    """Collect one round's results (one per host call) from hosts that may die under it.

    `assignment` maps host -> clients. A host whose call raises one of `failures` has
    lost that call's work; with policy 'retry' its clients are submitted again (Ray
    restarts the actor, which restores its clients from the last checkpoint) up to
    `retries` times, each once `recover(host)` says the host is back (False: it is gone
    for good). Whatever is still missing then is dropped, and the round completes with the
    survivors if at least `min_clients` of them returned.
    """
    report = FailureReport()
    results: list[T] = []
    returned = 0  # clients whose host answered
    pending = dict(assignment)
    attempt = 0
    while pending:
        futures = {a: submit(a, cids) for a, cids in pending.items()}
        failed: dict[int, list[int]] = {}
        for a, fut in futures.items():
            try:
                results.append(fetch(fut))
                returned += len(pending[a])
            except failures:
                failed[a] = pending[a]
        report.failed_actors += len(failed)
        if not failed:
            break
        if policy == "retry" and attempt < retries:
            attempt += 1
            pending = {a: cids for a, cids in failed.items() if recover(a)}
            report.retried_clients += sum(len(c) for c in pending.values())
            gone = [c for a, cids in failed.items() if a not in pending for c in cids]
            report.lost_clients.extend(gone)
            continue
        report.lost_clients.extend(c for cids in failed.values() for c in cids)
        break
    report.lost_clients.sort()
    _say_losses(report, returned, min_clients, server_round)
    return results, report


def _say_losses(report: FailureReport, returned: int, min_clients: int, server_round: int) -> None:
    """Warn of a round's actor failures; fail it if too few clients came back."""
    if report.failed_actors:
        log.warning(
            "round %d: %d actor failure(s); %d client(s) retried, %d lost",
            server_round,
            report.failed_actors,
            report.retried_clients,
            len(report.lost_clients),
        )
    if report.lost_clients and returned < min_clients:
        raise SimulationError(
            f"round {server_round}: only {returned} client(s) returned after actor "
            f"failures, fewer than federation.min_clients={min_clients}"
        )


def pack_clients(client_ids: list[int], per_actor: int) -> list[list[int]]:
    """Contiguous groups of at most `per_actor` clients, one group per actor."""
    return [client_ids[i : i + per_actor] for i in range(0, len(client_ids), per_actor)]


def _store_bytes(spec: HostSpec) -> int:
    from fuss_ray.features.cache import read_meta

    return int(sum(read_meta(Path(spec.store_path)).get("sizes", {}).values()))


def connect_ray(fed: FederationConfig) -> None:
    """Join the cluster at federation.ray_address or $RAY_ADDRESS, else start a local Ray.

    Inside a Ray Tune trial (or a test) Ray is already up and this does nothing. Without
    an address Ray would join any cluster it finds running on this machine (one left by
    `ray start`, say); fuss-ray starts its own instead, as documented.
    """
    from fuss_ray.federation.local_ray import init_ray

    server = fed.server
    init_ray(
        fed.ray_address,
        server.num_cpus if fed.executor == "ray" and server.actor else 0.0,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        configure_logging=False,
    )


def actor_paths(spec: HostSpec, via_object_store: bool) -> dict[str, str]:
    """The driver's paths that actors open themselves, by the config key that set them."""
    if spec.generated is not None:
        return {}
    from fuss_ray.features.cache import read_meta

    paths: dict[str, str] = {}
    if not via_object_store:
        paths["features.cache_dir"] = spec.store_path
    if spec.restore_dir is not None:  # actors write their clients' checkpoint files there
        paths["--out"] = str(Path(spec.restore_dir).parent)
    if read_meta(Path(spec.store_path)).get("mode") == "online":
        data, feats = spec.config["data"], spec.config["features"]
        if data.get("root"):
            paths["data.root"] = str(data["root"])
        weights = feats.get("weights")
        if weights and not str(weights).startswith("package:"):
            paths["features.weights"] = str(weights)
    return paths


def check_shared(paths: dict[str, str]) -> None:
    """Refuse, in one line, a path that some node of the cluster cannot see."""
    from fuss_ray.federation.nodes import first_unshared, probe_nodes

    problem = first_unshared(paths, probe_nodes(paths)) if paths else None
    if problem is not None:
        raise UserError(problem)


OBJECT_STORE_AUTO_BYTES = 2**30


def resource_bundle(cpus: float, gpus: float, resources: dict[str, float]) -> dict[str, float]:
    """A Ray reservation: CPUs, GPUs and custom resources, without the zero ones."""
    bundle = {"CPU": cpus, "GPU": gpus, **resources}
    return {k: v for k, v in bundle.items() if v > 0}


def actor_bundle(fed: FederationConfig) -> dict[str, float]:
    """What one client actor reserves: its CPUs, GPUs and custom resources."""
    return resource_bundle(fed.num_cpus, fed.num_gpus, fed.resources)


def use_object_store(fed: FederationConfig, store_bytes: int) -> bool:
    """Whether actors get the features through the object store rather than the cache path.

    'auto' picks the object store only when it is needed and cheap: on a cluster of several
    nodes (which may not share the cache folder) with a cache of at most 1 GiB. Larger
    caches on a multi-node cluster must sit on storage every node mounts (see
    docs/cluster.md).
    """
    if fed.feature_transport != "auto":
        return fed.feature_transport == "object_store"
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    return len(alive) > 1 and store_bytes <= OBJECT_STORE_AUTO_BYTES


def check_resources(
    fed: FederationConfig, actors: int, group_pg: Any, server: dict[str, float] | None = None
) -> None:
    """Refuse, in one line, a run the cluster (or the trial's reservation) cannot hold.

    `server`: what the server actor holds beside the hosts (federation.server).
    """
    import ray

    if group_pg is not None and len(group_pg.bundle_specs) < actors + 1:
        raise UserError(
            f"federation: {actors} actors need {actors + 1} placement-group "
            f"bundles, the trial reserved {len(group_pg.bundle_specs)}"
        )
    server = server or {}
    hint = {
        "CPU": "raise federation.clients_per_actor or lower federation.num_cpus",
        "GPU": "lower federation.num_gpus",
    }
    have = ray.cluster_resources()  # type: ignore[no-untyped-call]
    each = actor_bundle(fed)
    for name in dict.fromkeys([*each, *server]):
        per, extra = each.get(name, 0.0), server.get(name, 0.0)
        need = actors * per + extra
        if need <= have.get(name, 0) + 1e-9:
            continue
        where = "federation" if name in hint else "federation.resources"
        also = f" (+ {extra:g} for the server actor)" if extra else ""
        advice = f"; {hint[name]}" if name in hint else ""
        raise UserError(
            f"{where}: {actors} actors x {per:g} {name}{also} need {need:g} {name} "
            f"but the cluster has {have.get(name, 0):g}{advice}"
        )


def own_placement(fed: FederationConfig, actors: int) -> Any:
    """Outside a Tune trial: one placement group that gang-schedules every actor (None
    where an actor asks for no resources)."""
    import ray

    bundle = actor_bundle(fed)
    if not bundle:
        return None
    pg = ray.util.placement_group(
        [dict(bundle) for _ in range(actors)], strategy=fed.placement.upper()
    )
    if not pg.wait(timeout_seconds=300):
        ray.util.remove_placement_group(pg)
        raise SimulationError(
            f"the cluster could not place {actors} actors x {bundle} ({fed.placement}) within 300 s"
        )
    return pg


class RayExecutor(Executor):
    """One Ray actor per group of `clients_per_actor` logical clients.

    The global state is put in the object store once per round and each actor receives a
    reference; actors return only the updates of the clients they were asked to train.
    Outside a Tune trial the actors are gang-scheduled in one placement group whose
    strategy (PACK or SPREAD) is `federation.placement`.
    """

    def __init__(
        self, spec: HostSpec, fed: FederationConfig, server: dict[str, float] | None = None
    ) -> None:
        import ray

        from fuss_ray.federation.local_ray import record_local_ray

        connect_ray(fed)
        groups = pack_clients(sorted(spec.clients), fed.clients_per_actor)
        group_pg = ray.util.get_current_placement_group()
        check_resources(fed, len(groups), group_pg, server)
        self.fed = fed
        self.total_samples = sum(len(v) for v in spec.clients.values())
        cache_bytes = _store_bytes(spec) if spec.generated is None else 0
        # An online-mode descriptor has no shards: actors read the images themselves.
        via_object_store = cache_bytes > 0 and use_object_store(fed, cache_bytes)
        alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
        if len(alive) > 1:
            check_shared(actor_paths(spec, via_object_store))
        self.own_pg: Any = None if group_pg is not None else own_placement(fed, len(groups))
        if via_object_store:
            from fuss_ray.features.cache import FeatureStore

            store = FeatureStore.open(Path(spec.store_path))
            refs = [ray.put(b) for b in store.shard_bytes()]
            spec = replace(spec, store_refs=refs, store_meta=store.meta)
        self.transport = "object_store" if spec.store_refs is not None else "path"
        threads = max(1, math.floor(fed.num_cpus)) if fed.num_cpus >= 1 else 1
        actor_cls = ray.remote(ClientHost)
        self.owner: dict[int, int] = {}
        self.actors: list[Any] = []
        for a, group in enumerate(groups):
            sub = replace(spec, clients={c: spec.clients[c] for c in group}, threads=threads)
            options = self._actor_options(a, group_pg)
            self.actors.append(actor_cls.options(**options).remote(sub))
            for c in group:
                self.owner[c] = a
        ray.get([actor.ready.remote() for actor in self.actors])
        record_local_ray()  # Ray's agents are all up by now

    def _actor_options(self, a: int, group_pg: Any) -> dict[str, Any]:
        """Actor a's resources, restart policy and place (a trial's bundle a + 1, bundle a
        of the run's own placement group, or spread)."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        fed = self.fed
        options: dict[str, Any] = {
            "num_cpus": fed.num_cpus,
            "num_gpus": fed.num_gpus,
            "resources": dict(fed.resources),
            # A restarted actor re-runs its constructor, which restores its clients
            # from the newest checkpoint; lost calls are retried by gather_round.
            "max_restarts": fed.max_actor_restarts,
            "max_task_retries": 0,
        }
        if group_pg is not None:
            # Inside a Tune trial: actor a takes bundle a + 1 (bundle 0 is the trial's
            # own server), so a trial only ever uses what its placement group reserved.
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group_pg, placement_group_bundle_index=a + 1
            )
        elif self.own_pg is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.own_pg, placement_group_bundle_index=a
            )
        elif fed.placement == "spread":
            options["scheduling_strategy"] = "SPREAD"
        return options

    def placement(self) -> list[dict[str, Any]]:
        """Per actor: the node it runs on and how many clients it hosts."""
        import ray

        nodes = ray.get([actor.node_id.remote() for actor in self.actors])
        counts = [sum(1 for a in self.owner.values() if a == i) for i in range(len(self.actors))]
        return [{"node": n, "clients": c} for n, c in zip(nodes, counts, strict=True)]

    def train(
        self,
        broadcast: Broadcast,
        client_ids: list[int],
        server_round: int,
        keys: dict[int, int] | None = None,
    ) -> list[ClientUpdate]:
        """Every client's whole update (asynchronous mode, tests); rounds use
        `train_reduced`."""
        batches = self._call("train", broadcast, (), client_ids, server_round, keys)
        return sorted((u for b in batches for u in b), key=lambda u: u.client_id)

    def train_reduced(
        self,
        broadcast: Broadcast,
        shifts: dict[str, int],
        client_ids: list[int],
        server_round: int,
    ) -> Reduced:
        """One message per actor: the global state goes out once, one Reduced comes back."""
        merged = Reduced(shifts=dict(shifts))
        for part in self._call("train_reduced", broadcast, (shifts,), client_ids, server_round):
            merged = merged.merge(part)
        return merged

    def _call(
        self,
        method: str,
        broadcast: Broadcast,
        extra: tuple[Any, ...],
        client_ids: list[int],
        server_round: int,
        keys: dict[int, int] | None = None,
    ) -> list[Any]:
        import time

        import ray

        ref = ray.put(broadcast)
        per_actor: dict[int, list[int]] = {}
        for c in client_ids:
            per_actor.setdefault(self.owner[c], []).append(c)
        limit = self.fed.round_timeout_s
        deadlines: dict[int, float] = {}  # each attempt gets the full timeout

        def submit(a: int, cids: list[int]) -> Any:
            call = getattr(self.actors[a], method)
            if keys is None:
                fut = call.remote(ref, *extra, cids, server_round)
            else:
                fut = call.remote(ref, *extra, cids, server_round, {c: keys[c] for c in cids})
            if limit is not None:
                deadlines[id(fut)] = time.monotonic() + limit
            return fut

        def fetch(fut: Any) -> Any:
            if limit is None:
                return ray.get(fut)
            left = max(0.0, deadlines[id(fut)] - time.monotonic())
            return ray.get(fut, timeout=left)

        results, self.last_failures = gather_round(
            per_actor,
            submit,
            fetch,
            # ObjectLostError: the host answered, but its node died before the answer was
            # read (the result lived in that node's object store), so the work is lost
            # all the same (seen when the two-node test's worker node is killed).
            (
                ray.exceptions.RayActorError,
                ray.exceptions.GetTimeoutError,
                ray.exceptions.ObjectLostError,
            ),
            self.fed.on_actor_failure,
            self.fed.round_retries,
            self.fed.min_clients,
            server_round,
            self._wait_for_restart,
        )
        return results

    def _wait_for_restart(self, actor_index: int, timeout_s: float = 600.0) -> bool:
        """Block until Ray has restarted the actor (True) or given it up for dead (False)."""
        import time

        import ray

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get(self.actors[actor_index].ready.remote())
                return True
            except ray.exceptions.ActorUnavailableError:  # restarting: re-importing, restoring
                time.sleep(0.2)
            except ray.exceptions.RayActorError:  # out of restarts
                return False
        return False

    def save_clients(self, directory: Path) -> dict[int, str]:
        import ray

        names = [f"clients-{a:04d}.npz" for a in range(len(self.actors))]
        try:
            saved = ray.get(
                [
                    actor.save.remote(str(directory), n)
                    for actor, n in zip(self.actors, names, strict=True)
                ]
            )
        except ray.exceptions.RayActorError:
            # Its clients' state of this round died with it: neither a checkpoint without
            # them nor training on from older state would match a failure-free run.
            run_folder = directory.parent.parent  # OUT/checkpoints/.round-N.xxx
            raise SimulationError(
                "an actor died while writing its clients' checkpoint; the previous "
                f"checkpoint is whole: continue with fuss-ray run --resume {run_folder}"
            ) from None
        return {c: n for n, cids in zip(names, saved, strict=True) for c in cids}

    def pids(self) -> list[int]:
        """The worker process of each actor (what a node failure would take down)."""
        import ray

        return list(ray.get([actor.pid.remote() for actor in self.actors]))

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.own_pg is not None:
            ray.util.remove_placement_group(self.own_pg)
            self.own_pg = None
