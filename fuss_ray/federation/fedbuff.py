"""Asynchronous federation on the virtual clock: FedBuff (Nguyen et al., 2022).

`concurrency` clients train at once. When one finishes (on the simulated clock, from the
systems model's speeds, bandwidths, availability and dropouts; all clients equally fast
when the model is off) its update goes into a buffer and a newly sampled client starts
from the current global model; every `buffer_size` arrivals the server applies the
buffer, each update weighted by a staleness function of how many server updates happened
since its client started. A "round" in summaries, metrics and checkpoints is one server
update.

Determinism: arrival order comes from the clock alone, ties broken by client id, never from
which process finishes first; a client's training is seeded by its dispatch number, and
the clock does not depend on what training computes. So training can wait until a buffer
is full, then run every pending client in as few executor calls as possible (one per start
version), and the result is the same bits on the sequential and the Ray executor.

What a client contributes is computed against the model it started from (its
`ServerUpdate.async_contribution`): for FedAvg-like strategies, its change of the head and
the centroids; for OT matching, its centroids aligned to the centroids it started from,
minus those; for FedCC, its centroids, pooled after the current global ones (see
`ServerUpdate.apply_buffer`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fuss_ray.config import FedBuffConfig, RunConfig
from fuss_ray.errors import SimulationError
from fuss_ray.features.cache import FeatureStore
from fuss_ray.federation.checkpoint import ArrayTree
from fuss_ray.federation.executor import Executor
from fuss_ray.federation.reduction import screen_updates
from fuss_ray.federation.server import RoundResult, Server, state_bytes
from fuss_ray.federation.strategies.base import Strategy
from fuss_ray.federation.systems import KEPT, UNAVAILABLE
from fuss_ray.federation.types import Arrays, ModelState
from fuss_ray.models.head import FussModel
from fuss_ray.seeds import Stream, seed_stream


def staleness_weight(cfg: FedBuffConfig, staleness: int) -> float:
    """How much an update that is `staleness` server updates old counts (1 when fresh)."""
    s = max(0, staleness)
    if cfg.staleness == "constant":
        return 1.0
    if cfg.staleness == "polynomial":
        return float((1.0 + s) ** (-cfg.exponent))
    if s <= cfg.hinge_b:  # hinge: full weight up to b updates late, then decaying
        return 1.0
    return 1.0 / (cfg.hinge_a * (s - cfg.hinge_b) + 1.0)


@dataclass
class Dispatch:
    """One client's work: when it started, from which model, when it arrives."""

    client_id: int
    number: int  # the dispatch's serial number: seeds its training and its clock draws
    version: int  # the global model version it started from
    start_s: float
    finish_s: float  # math.inf: it never arrives (dropped)
    status: str  # systems status: kept, dropped
    num_samples: int = 0
    loss: float = math.nan
    contribution: Arrays | None = None  # set once trained
    rejected: str | None = None

    def order(self) -> tuple[float, int, int]:
        """Arrival order: the clock, then the client id, then the dispatch (never reached)."""
        return (self.finish_s, self.client_id, self.number)

    def meta(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "number": self.number,
            "version": self.version,
            "start_s": self.start_s,
            "finish_s": None if math.isinf(self.finish_s) else self.finish_s,
            "status": self.status,
            "num_samples": self.num_samples,
            "loss": None if math.isnan(self.loss) else self.loss,
            "rejected": self.rejected,
            "trained": self.contribution is not None,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], contribution: Arrays | None) -> Dispatch:
        finish = meta["finish_s"]
        return cls(
            client_id=int(meta["client_id"]),
            number=int(meta["number"]),
            version=int(meta["version"]),
            start_s=float(meta["start_s"]),
            finish_s=math.inf if finish is None else float(finish),
            status=str(meta["status"]),
            num_samples=int(meta["num_samples"]),
            loss=math.nan if meta["loss"] is None else float(meta["loss"]),
            contribution=contribution,
            rejected=meta["rejected"],
        )


@dataclass
class UpdateStats:
    """What one server update saw: its buffer's staleness, the clock, the drops."""

    staleness: list[int] = field(default_factory=list)
    arrivals: int = 0
    dropped: int = 0
    unavailable: int = 0
    rejected: dict[int, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        s = np.asarray(self.staleness or [0], dtype=np.float64)
        return {
            "staleness_mean": float(s.mean()),
            "staleness_p50": float(np.percentile(s, 50)),
            "staleness_p90": float(np.percentile(s, 90)),
            "staleness_max": float(s.max()),
            "arrivals": self.arrivals,
            "dropped": self.dropped,
            "unavailable": self.unavailable,
        }


class AsyncServer(Server):
    """The server of an asynchronous run: `run_round(v)` goes on until model version v."""

    def __init__(
        self,
        config: RunConfig,
        strategy: Strategy[Any],
        executor: Executor,
        client_ids: list[int],
        eval_store: FeatureStore | None,
        model: FussModel,
        initial_state: ModelState,
        val_store: FeatureStore | None = None,
    ) -> None:
        """As `Server`; the config was checked by `simulation.check_async`."""
        super().__init__(
            config, strategy, executor, client_ids, eval_store, model, initial_state, val_store
        )
        self.cfg = self.config.federation.fedbuff
        self.version = 0
        self.clock_s = 0.0
        self.dispatched = 0  # dispatches so far: the next one's number
        self.in_flight: list[Dispatch] = []
        self.buffer: list[Dispatch] = []
        self.starts: dict[int, ModelState] = {}  # version -> state, for untrained dispatches
        self.pending = UpdateStats()
        self.sent_since = 0

    # The clock -----------------------------------------------------------------------

    def _duration(self, cid: int, number: int, start_s: float) -> tuple[str, float]:
        size = state_bytes(self.state)
        steps = self.config.train.local_steps
        if self.systems is None:  # no systems model: every client equally fast
            return KEPT, steps * self.config.systems.step_seconds
        return self.systems.client_time(cid, number, start_s, steps, size, size)

    def _dispatch_one(self) -> None:
        """Start one more client, sampled among those not training, from the current model."""
        busy = {d.client_id for d in self.in_flight}
        idle = [c for c in self.client_ids if c not in busy]
        for _ in range(10 * len(self.client_ids)):
            number = self.dispatched
            self.dispatched += 1
            rng = np.random.default_rng(seed_stream(Stream.DISPATCH, self.config.seed, number))
            cid = idle[int(rng.integers(len(idle)))]
            status, duration = self._duration(cid, number, self.clock_s)
            if status == UNAVAILABLE:
                self.pending.unavailable += 1
                continue
            self.starts[self.version] = self.state
            self.sent_since += 1  # it downloads the model (offline clients do not)
            self.in_flight.append(
                Dispatch(cid, number, self.version, self.clock_s, self.clock_s + duration, status)
            )
            return
        raise SimulationError(
            f"async: no client was online at simulated second {self.clock_s:.1f} after "
            f"{10 * len(self.client_ids)} tries (systems.availability)"
        )

    # Training, deferred until a buffer needs it ---------------------------------------

    def _train_pending(self) -> None:
        """Train every dispatched client not trained yet: one executor call per start
        version (and per repeat of a client), in dispatch order."""
        waiting = sorted(
            (d for d in [*self.buffer, *self.in_flight] if d.contribution is None),
            key=lambda d: d.number,
        )
        waiting = [d for d in waiting if d.status == KEPT and d.rejected is None]
        batches: list[list[Dispatch]] = []
        for d in waiting:
            last = batches[-1] if batches else None
            if (
                last is None
                or last[0].version != d.version
                or any(x.client_id == d.client_id for x in last)
            ):
                batches.append([d])
            else:
                last.append(d)
        max_norm = self.config.federation.max_update_norm
        for batch in batches:
            start = self.starts[batch[0].version]
            keys = {d.client_id: d.number for d in batch}
            updates = self.executor.train(
                self.strategy.broadcast(start), sorted(keys), self.version, keys
            )
            accepted, rejected = screen_updates(start, updates, max_norm)
            by_id = {d.client_id: d for d in batch}
            for u in updates:
                d = by_id[u.client_id]
                d.num_samples, d.loss = u.num_samples, u.loss
                d.rejected = rejected.get(u.client_id)
            for u in accepted:
                by_id[u.client_id].contribution = self.update.async_contribution(start, u)
            for d in batch:
                if d.contribution is None and d.rejected is None:  # lost with its actor
                    d.rejected = "lost"
        needed = {d.version for d in [*self.buffer, *self.in_flight] if d.contribution is None}
        self.starts = {v: s for v, s in self.starts.items() if v in needed or v == self.version}

    # Rounds = server updates ----------------------------------------------------------

    def run_round(self, server_round: int) -> RoundResult:
        started = time.perf_counter()
        if not self.in_flight and not self.buffer and self.version == 0:
            for _ in range(self.cfg.concurrency):
                self._dispatch_one()
        applied: list[Dispatch] = []
        while self.version < server_round:
            event = min(self.in_flight, key=Dispatch.order)
            self.in_flight.remove(event)
            self.clock_s = max(self.clock_s, event.finish_s)
            if event.status == KEPT:
                self.pending.arrivals += 1
                self.buffer.append(event)
            else:
                self.pending.dropped += 1
            if len(self.buffer) >= self.cfg.buffer_size:
                applied = self._apply()
            self._dispatch_one()
        return self._result(server_round, applied, started)

    def _apply(self) -> list[Dispatch]:
        """The buffer is full: train what it waits for, weight, update, next version."""
        self._train_pending()
        used = [d for d in self.buffer if d.rejected is None and d.contribution is not None]
        for d in self.buffer:
            self.participation[d.client_id] += 1
            if not math.isnan(d.loss):
                self.last_loss[d.client_id] = d.loss
            if d.rejected is not None:
                self.pending.rejected[d.client_id] = d.rejected
        self.pending.staleness = [self.version - d.version for d in used]
        if used:
            weights = [
                staleness_weight(self.cfg, self.version - d.version) * d.num_samples for d in used
            ]
            parts = [d.contribution for d in used if d.contribution is not None]
            self.state = self.update.apply_buffer(self.state, weights, parts, self.version + 1)
        self.version += 1
        self.buffer = []
        return used

    def _result(self, server_round: int, applied: list[Dispatch], started: float) -> RoundResult:
        size = state_bytes(self.state)
        stats = self.pending
        result = RoundResult(
            round=server_round,
            miou=None,
            pixel_acc=None,
            seconds=0.0,
            clients=[d.client_id for d in applied],
            mean_loss=float(np.mean([d.loss for d in applied])) if applied else float("nan"),
            client_losses=[d.loss for d in applied],
            bytes_sent=size * self.sent_since,
            bytes_received=size * stats.arrivals,
            rejected=dict(stats.rejected),
            failures=self.executor.last_failures,
            sim_clock_s=self.clock_s,
            asynchrony=stats.summary(),
        )
        self.pending = UpdateStats()
        self.sent_since = 0
        self._scored(result)
        result.seconds = time.perf_counter() - started
        return result

    # Checkpoints ----------------------------------------------------------------------

    def export(self) -> tuple[ArrayTree, dict[str, Any]]:
        """The server's state plus everything in flight: each trained dispatch's
        contribution, and the model versions untrained ones start from."""
        self._train_pending()  # so that only the current version's starts remain
        arrays, meta = super().export()
        for d in [*self.buffer, *self.in_flight]:
            if d.contribution is not None:
                arrays[f"contribution:{d.number}"] = d.contribution
        for v, state in self.starts.items():
            arrays[f"start:{v}"] = state
        meta["async"] = {
            "version": self.version,
            "clock_s": self.clock_s,
            "dispatched": self.dispatched,
            "sent_since": self.sent_since,
            "in_flight": [d.meta() for d in self.in_flight],
            "buffer": [d.meta() for d in self.buffer],
        }
        return arrays, meta

    def restore(self, arrays: ArrayTree, meta: dict[str, Any]) -> None:
        super().restore(arrays, meta)
        state = meta["async"]
        self.version = int(state["version"])
        self.clock_s = float(state["clock_s"])
        self.dispatched = int(state["dispatched"])
        self.sent_since = int(state["sent_since"])

        def back(m: dict[str, Any]) -> Dispatch:
            return Dispatch.from_meta(m, arrays.get(f"contribution:{m['number']}"))

        self.in_flight = [back(m) for m in state["in_flight"]]
        self.buffer = [back(m) for m in state["buffer"]]
        self.starts = {
            int(k.partition(":")[2]): v for k, v in arrays.items() if k.startswith("start:")
        }
