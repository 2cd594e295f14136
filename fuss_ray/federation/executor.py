"""Where client hosts live: in this process (sequential) or in Ray actors.

Both executors expose the same `train` call and return updates sorted by client id, so the
server, the strategies and the results cannot tell them apart.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any

from fuss_ray.config import FederationConfig
from fuss_ray.errors import UserError
from fuss_ray.federation.client import ClientHost, HostSpec
from fuss_ray.federation.strategies.base import ClientUpdate, ModelState


class Executor(ABC):
    @abstractmethod
    def train(
        self, global_state: ModelState, client_ids: list[int], server_round: int
    ) -> list[ClientUpdate]: ...

    def shutdown(self) -> None:  # noqa: B027  (optional hook)
        """Release hosts; a no-op where there is nothing to release."""


class SequentialExecutor(Executor):
    """All clients in one in-process host: the reference the Ray executor must match."""

    def __init__(self, spec: HostSpec) -> None:
        self.host = ClientHost(spec)

    def train(
        self, global_state: ModelState, client_ids: list[int], server_round: int
    ) -> list[ClientUpdate]:
        return self.host.train(global_state, client_ids, server_round)


def pack_clients(client_ids: list[int], per_actor: int) -> list[list[int]]:
    """Contiguous groups of at most `per_actor` clients, one group per actor."""
    return [client_ids[i : i + per_actor] for i in range(0, len(client_ids), per_actor)]


class RayExecutor(Executor):
    """One Ray actor per group of `clients_per_actor` logical clients.

    The global state is put in the object store once per round and each actor receives a
    reference; actors return only the updates of the clients they were asked to train.
    """

    def __init__(self, spec: HostSpec, fed: FederationConfig) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(
                address=fed.ray_address,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
                configure_logging=False,
            )
        groups = pack_clients(sorted(spec.clients), fed.clients_per_actor)
        group_pg = ray.util.get_current_placement_group()
        if group_pg is not None and len(group_pg.bundle_specs) < len(groups) + 1:
            raise UserError(
                f"federation: {len(groups)} actors need {len(groups) + 1} placement-group "
                f"bundles, the trial reserved {len(group_pg.bundle_specs)}"
            )
        need_cpu = len(groups) * fed.num_cpus
        need_gpu = len(groups) * fed.num_gpus
        have = ray.cluster_resources()  # type: ignore[no-untyped-call]
        if need_cpu > have.get("CPU", 0) + 1e-9:
            raise UserError(
                f"federation: {len(groups)} actors x {fed.num_cpus} CPU need {need_cpu:g} CPUs "
                f"but the cluster has {have.get('CPU', 0):g}; raise federation.clients_per_actor "
                "or lower federation.num_cpus"
            )
        if need_gpu > have.get("GPU", 0) + 1e-9:
            raise UserError(
                f"federation: {len(groups)} actors x {fed.num_gpus} GPU need {need_gpu:g} GPUs "
                f"but the cluster has {have.get('GPU', 0):g}; lower federation.num_gpus"
            )
        threads = max(1, math.floor(fed.num_cpus)) if fed.num_cpus >= 1 else 1
        actor_cls = ray.remote(ClientHost)
        self.owner: dict[int, int] = {}
        self.actors: list[Any] = []
        for a, group in enumerate(groups):
            sub = replace(spec, clients={c: spec.clients[c] for c in group}, threads=threads)
            options: dict[str, Any] = {
                "num_cpus": fed.num_cpus,
                "num_gpus": fed.num_gpus,
                "max_restarts": 0,
            }
            if group_pg is not None:
                # Inside a Tune trial: actor a takes bundle a + 1 (bundle 0 is the trial's
                # own server), so a trial only ever uses what its placement group reserved.
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    group_pg, placement_group_bundle_index=a + 1
                )
            self.actors.append(actor_cls.options(**options).remote(sub))
            for c in group:
                self.owner[c] = a
        ray.get([actor.ready.remote() for actor in self.actors])

    def train(
        self, global_state: ModelState, client_ids: list[int], server_round: int
    ) -> list[ClientUpdate]:
        import ray

        ref = ray.put(global_state)
        per_actor: dict[int, list[int]] = {}
        for c in client_ids:
            per_actor.setdefault(self.owner[c], []).append(c)
        futures = [
            self.actors[a].train.remote(ref, cids, server_round) for a, cids in per_actor.items()
        ]
        updates = [u for batch in ray.get(futures) for u in batch]
        return sorted(updates, key=lambda u: u.client_id)

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
