"""Will the run fit? An estimate made before any actor starts, and a refusal if not.

A simulation that runs out of memory an hour in, after the kernel's OOM killer has taken
actors one by one, wastes the hour and says nothing useful. The estimate below is built
from measured costs (see docs/reliability.md for the measurement) and compared with what
is free, so that an oversized run is refused at once with both numbers in the message.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from fuss_ray.config import RunConfig
from fuss_ray.errors import UserError
from fuss_ray.federation.client import HostSpec

MiB = 2**20
GiB = 2**30
# Measured on the 2-core development machine after one round (tools/peak_memory.py and
# psutil on each process): a client host's private memory (USS) is ~515 MiB, the code
# pages of torch and friends that every process on a node shares are ~400 MiB (RSS minus
# USS), the driver is ~1.0 GiB and a local Ray's own processes ~560 MiB.
HOST_PRIVATE = 550 * MiB
SHARED_LIBS = 450 * MiB
DRIVER = 1100 * MiB
RAY_SYSTEM = 600 * MiB
CLIENT_OVERHEAD = 4 * 1024  # Python objects around a logical client's arrays
ONLINE_BACKBONE = 400 * MiB  # a frozen ViT-B (350 MB of fp32 weights) and its activations


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes the run needs, by part, so that the refusal can say where they go."""

    hosts: int
    per_host: int
    clients: int
    client_bytes: int  # all logical clients together
    driver: int
    shared: int  # shared libraries and, for a local Ray, its own processes
    server_actor: int = 0  # the round loop's own process, where it runs in an actor

    @property
    def total(self) -> int:
        fixed = self.client_bytes + self.driver + self.shared + self.server_actor
        return self.hosts * self.per_host + fixed

    def describe(self) -> str:
        server = f", server actor {self.server_actor / GiB:.2f} GiB" if self.server_actor else ""
        return (
            f"{self.hosts} host(s) x {self.per_host / GiB:.2f} GiB, {self.clients} clients "
            f"{self.client_bytes / GiB:.2f} GiB, driver {self.driver / GiB:.2f} GiB, "
            f"shared {self.shared / GiB:.2f} GiB{server}"
        )


def estimate_memory(
    config: RunConfig,
    spec: HostSpec,
    hosts: int,
    state_bytes: int,
    eval_images: int,
    start_local_ray: bool,
    server_actor: bool = False,
) -> MemoryEstimate:
    """What a run with `hosts` client hosts needs at its peak.

    A server actor holds what the driver holds of the run (the model states, the scored
    splits) in a process of its own, with the libraries a host imports.

    A logical client costs its image positions, its kNN table and whatever its strategy's
    objective keeps between rounds (`kept_states` model states: MOON's previous model,
    local-only's own model, SCAFFOLD's control variate); a host adds three model copies
    and one batch's activations to its fixed cost, per client of a stack.
    """
    from fuss_ray.federation.strategies import strategy_for

    strategy = strategy_for(config)
    feature_shape = _feature_shape(spec.store_path)
    k = config.loss.knn_k
    kept = strategy.client_objective().kept_states * state_bytes
    client_bytes = 0
    for positions in spec.clients.values():
        n = len(positions)
        client_bytes += 8 * n * (1 + k) + CLIENT_OVERHEAD + kept
    d, h, w = feature_shape
    batch = 2 * config.train.batch_size * (d + config.model.code_dim) * h * w * 4
    # A stack of G clients (`client_batch`) holds G models, their optimiser state and
    # G batches' activations at once.
    g = strategy.client_objective().stack_size(config.federation.client_batch)
    per_host = HOST_PRIVATE + g * (3 * state_bytes + 8 * batch)
    if config.features.mode == "online":
        # Its own backbone, and one round's features of the clients it hosts at most.
        sizes = sorted((len(p) for p in spec.clients.values()), reverse=True)
        per_actor = config.federation.clients_per_actor if hosts > 1 else len(sizes)
        per_host += ONLINE_BACKBONE + sum(sizes[:per_actor]) * d * h * w * 4
    side = config.features.label_size
    driver = DRIVER + 4 * state_bytes + eval_images * side * side
    if None not in strategy.run_shape().scored_models({}, {}, sorted(spec.clients)):
        driver += len(spec.clients) * state_bytes  # the server scores every client's model
    shared = SHARED_LIBS + (RAY_SYSTEM if start_local_ray else 0)
    server = HOST_PRIVATE + driver - DRIVER if server_actor else 0
    return MemoryEstimate(hosts, per_host, len(spec.clients), client_bytes, driver, shared, server)


def _feature_shape(store_path: str) -> tuple[int, int, int]:
    from pathlib import Path

    from fuss_ray.features.cache import read_meta

    d, h, w = read_meta(Path(store_path))["feature_shape"]
    return int(d), int(h), int(w)


def host_count(config: RunConfig, num_clients: int) -> int:
    fed = config.federation
    if fed.executor == "sequential":
        return 1
    return math.ceil(num_clients / fed.clients_per_actor)


def memory_limit(config: RunConfig) -> tuple[int, str]:
    """The bytes a run may use and where that number comes from."""
    fed = config.federation
    if fed.memory_limit_gb is not None:
        return int(fed.memory_limit_gb * GiB), "federation.memory_limit_gb"
    address = fed.ray_address or os.environ.get("RAY_ADDRESS")
    if fed.executor == "ray" and address and address != "local":
        import ray

        from fuss_ray.federation.executor import connect_ray

        connect_ray(fed)
        total = ray.cluster_resources().get("memory", 0.0)  # type: ignore[no-untyped-call]
        return int(total), "the Ray cluster's memory resource"
    import psutil

    return int(psutil.virtual_memory().available), "free memory on this machine"


def check_memory(estimate: MemoryEstimate, limit: int, source: str) -> None:
    """Refuse, in one line with the estimate and the limit, a run that would not fit."""
    if estimate.total <= limit:
        return
    raise UserError(
        f"federation: this run needs about {estimate.total / GiB:.1f} GiB "
        f"({estimate.describe()}) but {limit / GiB:.1f} GiB is available ({source}); "
        "raise federation.clients_per_actor (fewer hosts) or use a bigger machine or cluster"
    )
