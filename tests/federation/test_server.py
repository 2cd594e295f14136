"""A broken client must not move the global model."""

from pathlib import Path

import numpy as np

from fuss_ray.config import validate_config
from fuss_ray.federation.client import build_model
from fuss_ray.federation.executor import Executor, SequentialExecutor
from fuss_ray.federation.reduction import Reduced, reduce_updates
from fuss_ray.federation.server import Server
from fuss_ray.federation.server_update import build_update
from fuss_ray.federation.strategies import ClientUpdate, build_strategy
from fuss_ray.federation.types import Broadcast
from fuss_ray.simulation import host_spec, initial_state, prepare

from ..conftest import tiny_config_dict


class PoisonedExecutor(Executor):
    """Client 1 returns NaN weights (a crashed GPU kernel, or an attacker)."""

    def __init__(self, inner: SequentialExecutor) -> None:
        self.inner = inner
        self.total_samples = inner.total_samples

    def train(
        self, broadcast: Broadcast, client_ids: list[int], server_round: int
    ) -> list[ClientUpdate]:
        updates = self.inner.train(broadcast, client_ids, server_round)
        for u in updates:
            if u.client_id == 1:
                u.state = {k: np.full_like(v, np.nan) for k, v in u.state.items()}
        return updates

    def train_reduced(
        self,
        broadcast: Broadcast,
        shifts: dict[str, int],
        client_ids: list[int],
        server_round: int,
    ) -> Reduced:
        updates = self.train(broadcast, client_ids, server_round)
        return reduce_updates(self.inner.host.update_rule, broadcast.state, shifts, updates, None)

    def save_clients(self, directory: Path) -> dict[int, str]:
        return self.inner.save_clients(directory)


def test_nan_client_does_not_change_the_global_model(cache_dir: Path) -> None:
    cfg = validate_config(tiny_config_dict(cache_dir, **{"federation.strategy": "fedavg"}))
    prep = prepare(cfg, show_progress=False)
    strategy = build_strategy(cfg.federation.strategy, cfg.seed)
    spec = host_spec(cfg, prep)
    start = initial_state(cfg, prep.train_store.feature_dim)
    model = build_model(cfg, prep.train_store.feature_dim)
    server = Server(
        cfg,
        strategy,
        PoisonedExecutor(SequentialExecutor(spec)),
        [0, 1, 2, 3],
        prep.eval_store,
        model,
        dict(start),
    )
    result = server.run_round(1)
    assert result.rejected == {1: "non-finite"}
    assert result.metrics()["rejected_updates"] == 1.0
    assert all(np.isfinite(v).all() for v in server.state.values())
    # Exactly what the three healthy clients alone would have produced.
    honest = SequentialExecutor(spec).train(Broadcast(start), [0, 2, 3], 1)
    expected = build_update(cfg.federation.strategy, cfg.seed).aggregate(start, honest, 1)
    for k in expected:
        assert np.array_equal(server.state[k], expected[k]), k
