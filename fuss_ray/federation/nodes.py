"""Which of a run's paths every node of a cluster can reach, asked before any actor starts.

On one machine every path the driver resolved is every actor's path too. On a cluster an
actor reads the feature cache (unless it comes through the object store) and writes its
clients' checkpoint files into the run folder, so those must sit on storage that every
node mounts at the same path. A run that would fail there minutes later, in an actor,
is refused here in one line that names the path and the node.

This module imports nothing heavy: the probe runs as a tiny Ray task on every node.
"""

from __future__ import annotations

import os
from typing import Any

PROBE_TIMEOUT_S = 120.0


def missing_paths(paths: dict[str, str]) -> list[str]:
    """The names whose path does not exist on the machine this runs on."""
    return [name for name, path in paths.items() if not os.path.exists(path)]


def probe_nodes(paths: dict[str, str], timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, list[str]]:
    """Per alive node (by IP): the names of `paths` it cannot see.

    A node that does not answer within `timeout_s` (no worker could start there) is left
    out rather than blamed: the actors' own failures will name it if it matters.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(missing_paths)
    refs: dict[str, Any] = {}
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if not node.get("Alive"):
            continue
        where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        name = f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        refs[name] = probe.options(scheduling_strategy=where).remote(paths)
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    answered = {id(r) for r in ready}
    return {name: ray.get(ref) for name, ref in refs.items() if id(ref) in answered}


def first_unshared(paths: dict[str, str], missing: dict[str, list[str]]) -> str | None:
    """One line naming the first path some node lacks, with what to do about it."""
    for node, names in sorted(missing.items()):
        for name in paths:
            if name not in names:
                continue
            hint = (
                ", or set federation.feature_transport: object_store"
                if name == "features.cache_dir"
                else ""
            )
            return (
                f"{name}: {paths[name]} is not there on node {node}, only on the driver's "
                "machine; put it on storage every node mounts at the same path "
                f"(docs/cluster.md){hint}"
            )
    return None
