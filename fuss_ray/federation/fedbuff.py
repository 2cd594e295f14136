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

Each trained client is screened and reduced on its own against the model it started
from (`reduction.reduce_updates`, as hosts do for a round), so a full buffer is a
`Buffer` of groups, one per start version, merged by the same path as a synchronous
round (`ServerUpdate.merge`): a stale group counts as the change its clients made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fuss_ray.config import FedBuffConfig
from fuss_ray.errors import SimulationError
from fuss_ray.federation.arrivals import Arrivals, Arrived, Server, state_bytes
from fuss_ray.federation.buffer import Buffer, Group, as_arrays, from_arrays
from fuss_ray.federation.checkpoint import ArrayTree
from fuss_ray.federation.reduction import ClientRecord, Reduced, reduce_updates
from fuss_ray.federation.systems import KEPT, UNAVAILABLE
from fuss_ray.federation.types import CENTROIDS, Arrays, ClientUpdate, ModelState
from fuss_ray.seeds import Stream, seed_stream

REDUCED = "reduced:"  # a trained dispatch's reduced update, in a checkpoint
LEGACY = "contribution:"  # the same in the earlier layout (its change, see `_legacy`)


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
    reduced: Reduced | None = None  # set once trained: its screened update, reduced
    lost: bool = False  # its training was lost with its actor

    def order(self) -> tuple[float, int, int]:
        """Arrival order: the clock, then the client id, then the dispatch (never reached)."""
        return (self.finish_s, self.client_id, self.number)

    def accepted(self) -> bool:
        return self.reduced is not None and self.reduced.weight > 0

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
            "rejected": "lost" if self.lost else None,
            "trained": self.reduced is not None,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], reduced: Reduced | None) -> Dispatch:
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
            reduced=reduced,
            lost=meta["rejected"] == "lost",
        )


@dataclass
class UpdateStats:
    """What one server update saw: its buffer's staleness, the clock, the drops."""

    staleness: list[int] = field(default_factory=list)
    arrivals: int = 0
    dropped: int = 0
    unavailable: int = 0

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


class FedBuff(Arrivals):
    """Asynchronous arrivals: `collect(v)` runs the clock until a buffer is full."""

    def __init__(self, server: Server) -> None:
        """The config was checked by `simulation.check_async`."""
        super().__init__(server)
        self.cfg = server.config.federation.fedbuff
        self.version = 0
        self.clock_s = 0.0
        self.dispatched = 0  # dispatches so far: the next one's number
        self.in_flight: list[Dispatch] = []
        self.buffer: list[Dispatch] = []
        self.starts: dict[int, ModelState] = {}  # version -> state, for pending dispatches
        self.pending = UpdateStats()
        self.sent_since = 0
        self.owed = 0  # clients to start once the update is made

    # The clock -----------------------------------------------------------------------

    def _duration(self, cid: int, number: int, start_s: float) -> tuple[str, float]:
        s = self.server
        size = state_bytes(s.state)
        steps = s.config.train.local_steps
        if s.systems is None:  # no systems model: every client equally fast
            return KEPT, steps * s.config.systems.step_seconds
        return s.systems.client_time(cid, number, start_s, steps, size, size)

    def _dispatch_one(self) -> None:
        """Start one more client, sampled among those not training, from the current model."""
        s = self.server
        busy = {d.client_id for d in self.in_flight}
        idle = [c for c in s.client_ids if c not in busy]
        for _ in range(10 * len(s.client_ids)):
            number = self.dispatched
            self.dispatched += 1
            rng = np.random.default_rng(seed_stream(Stream.DISPATCH, s.config.seed, number))
            cid = idle[int(rng.integers(len(idle)))]
            status, duration = self._duration(cid, number, self.clock_s)
            if status == UNAVAILABLE:
                self.pending.unavailable += 1
                continue
            self.starts[self.version] = s.state
            self.sent_since += 1  # it downloads the model (offline clients do not)
            self.in_flight.append(
                Dispatch(cid, number, self.version, self.clock_s, self.clock_s + duration, status)
            )
            return
        raise SimulationError(
            f"async: no client was online at simulated second {self.clock_s:.1f} after "
            f"{10 * len(s.client_ids)} tries (systems.availability)"
        )

    # Training, deferred until a buffer needs it ---------------------------------------

    def _train_pending(self) -> None:
        """Train every dispatched client not trained yet: one executor call per start
        version (and per repeat of a client), in dispatch order; each update is screened
        and reduced against the model it started from."""
        s = self.server
        waiting = sorted(
            (d for d in [*self.buffer, *self.in_flight] if d.reduced is None),
            key=lambda d: d.number,
        )
        batches: list[list[Dispatch]] = []
        for d in (d for d in waiting if d.status == KEPT and not d.lost):
            last = batches[-1] if batches else None
            if (
                last is None
                or last[0].version != d.version
                or any(x.client_id == d.client_id for x in last)
            ):
                batches.append([d])
            else:
                last.append(d)
        max_norm = s.config.federation.max_update_norm
        for batch in batches:
            start = self.starts[batch[0].version]
            keys = {d.client_id: d.number for d in batch}
            updates = s.executor.train(
                s.strategy.broadcast(start), sorted(keys), self.version, keys
            )
            shifts = s.update.grid(start, s.executor.total_samples)
            by_id = {d.client_id: d for d in batch}
            for u in updates:
                d = by_id[u.client_id]
                d.num_samples, d.loss = u.num_samples, u.loss
                d.reduced = reduce_updates(s.update, start, shifts, [u], max_norm)
            for d in batch:
                d.lost = d.reduced is None
        self._keep_starts()

    def _keep_starts(self) -> None:
        """The models pending dispatches started from, and the current one."""
        needed = {d.version for d in [*self.buffer, *self.in_flight]}
        self.starts = {v: m for v, m in self.starts.items() if v in needed or v == self.version}

    # Server updates -------------------------------------------------------------------

    def collect(self, server_round: int) -> Arrived:
        """Arrivals in clock order until the buffer is full (`server_round` is the model
        version the update makes)."""
        if not self.in_flight and not self.buffer and self.version == 0:
            for _ in range(self.cfg.concurrency):
                self._dispatch_one()
        while True:
            event = min(self.in_flight, key=Dispatch.order)
            self.in_flight.remove(event)
            self.clock_s = max(self.clock_s, event.finish_s)
            self.owed += 1  # a new client starts in its place
            if event.status == KEPT:
                self.pending.arrivals += 1
                self.buffer.append(event)
            else:
                self.pending.dropped += 1
            if len(self.buffer) >= self.cfg.buffer_size:
                return self._arrived()
            self._dispatch_owed()

    def _dispatch_owed(self) -> None:
        while self.owed:
            self.owed -= 1
            self._dispatch_one()

    def _arrived(self) -> Arrived:
        """The full buffer, trained, as groups of one start version each."""
        self._train_pending()
        used = [d for d in self.buffer if d.accepted()]
        self.pending.staleness = [self.version - d.version for d in used]
        size = state_bytes(self.server.state)
        return Arrived(
            buffer=Buffer(self.server.state, self.version, self._groups()),
            clients=[d.client_id for d in used],
            bytes_sent=size * self.sent_since,
            bytes_received=size * self.pending.arrivals,
            sim_clock_s=self.clock_s,
            lost={d.client_id: "lost" for d in self.buffer if d.lost},
            asynchrony=self.pending.summary(),
        )

    def _groups(self) -> list[Group]:
        """The buffer's trained dispatches by start version (a repeated client starts a
        group of its own), each weighted by its staleness."""
        trained = sorted(
            (d for d in self.buffer if d.reduced is not None), key=lambda d: (d.version, d.number)
        )
        groups: list[Group] = []
        members: list[set[int]] = []
        for d in trained:
            assert d.reduced is not None
            if groups and groups[-1].version == d.version and d.client_id not in members[-1]:
                groups[-1].reduced = groups[-1].reduced.merge(d.reduced)
                members[-1].add(d.client_id)
                continue
            weight = staleness_weight(self.cfg, self.version - d.version)
            groups.append(Group(d.version, self.starts[d.version], d.reduced, weight))
            members.append({d.client_id})
        return groups

    def applied(self) -> None:
        """The next version exists: clients start from it in place of those that arrived."""
        self.version += 1
        self.buffer = []
        self.pending = UpdateStats()
        self.sent_since = 0
        self._dispatch_owed()
        self._keep_starts()

    # Checkpoints ----------------------------------------------------------------------

    def export(self) -> tuple[ArrayTree, dict[str, Any] | None]:
        """Everything in flight: each trained dispatch's reduced update, and the models
        pending dispatches started from."""
        self._train_pending()  # so that training never depends on when a checkpoint was
        arrays: ArrayTree = {}
        reduced: dict[str, Any] = {}
        for d in [*self.buffer, *self.in_flight]:
            if d.reduced is not None:
                arrays[f"{REDUCED}{d.number}"], reduced[str(d.number)] = as_arrays(d.reduced)
        for v, state in self.starts.items():
            arrays[f"start:{v}"] = state
        meta = {
            "version": self.version,
            "clock_s": self.clock_s,
            "dispatched": self.dispatched,
            "sent_since": self.sent_since,
            "in_flight": [d.meta() for d in self.in_flight],
            "buffer": [d.meta() for d in self.buffer],
            "reduced": reduced,
        }
        return arrays, meta

    def restore(self, arrays: ArrayTree, meta: dict[str, Any] | None) -> None:
        assert meta is not None, "an asynchronous checkpoint holds its dispatches"
        self.version = int(meta["version"])
        self.clock_s = float(meta["clock_s"])
        self.dispatched = int(meta["dispatched"])
        self.sent_since = int(meta["sent_since"])
        self.starts = {
            int(k.partition(":")[2]): v for k, v in arrays.items() if k.startswith("start:")
        }
        reduced = meta.get("reduced", {})

        def back(m: dict[str, Any]) -> Dispatch:
            key = str(m["number"])
            if m["rejected"] not in (None, "lost"):  # screened out, in the earlier layout
                record = ClientRecord(m["client_id"], m["num_samples"], math.nan, m["rejected"])
                return Dispatch.from_meta(m, Reduced(records=[record]))
            if key in reduced:
                return Dispatch.from_meta(m, from_arrays(arrays[f"{REDUCED}{key}"], reduced[key]))
            if f"{LEGACY}{key}" in arrays:  # a checkpoint written before buffers were groups
                return self._legacy(m, arrays[f"{LEGACY}{key}"])
            return Dispatch.from_meta(m, None)

        self.in_flight = [back(m) for m in meta["in_flight"]]
        self.buffer = [back(m) for m in meta["buffer"]]

    def _legacy(self, m: dict[str, Any], change: Arrays) -> Dispatch:
        """A trained dispatch of the earlier layout, which kept its change against the
        model it started from (head and, for index-wise and aligned centroids, the
        centroids' change; FedCC's raw centroids). That model was kept only while a
        dispatch still had to train from it; for the others the model at this checkpoint
        stands in, which is what the earlier rule added the change to."""
        s = self.server
        d = Dispatch.from_meta(m, None)
        start = self.starts.setdefault(d.version, s.state)
        update = ClientUpdate(d.client_id, d.num_samples, dict(start), np.zeros(0), d.loss)
        summed, own = s.update.client_arrays(update, start)
        shifts = s.update.grid(start, s.executor.total_samples)
        d.reduced = Reduced(shifts=dict(shifts))
        d.reduced.records.append(ClientRecord(d.client_id, d.num_samples, d.loss))
        for key in summed:
            frame = key if key in start else CENTROIDS
            d.reduced.add(key, start[frame].astype(np.float64) + change[frame], d.num_samples)
        if own:
            d.reduced.per_client[d.client_id] = {k: change[k] for k in own}
        d.reduced.weight = d.num_samples
        return d
