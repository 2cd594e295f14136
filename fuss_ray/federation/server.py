"""The server: one loop for both modes. An arrival process (synchronous `Rounds` here, or
FedBuff's clock in `fedbuff.py`) hands it a `Buffer` per update; it merges that through
the server update and the strategy, keeps the books, and scores the result."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fuss_ray.config import FederationConfig, RunConfig
from fuss_ray.features.cache import FeatureStore
from fuss_ray.federation.arrivals import Arrivals, Rounds
from fuss_ray.federation.checkpoint import ArrayTree
from fuss_ray.federation.executor import Executor, FailureReport
from fuss_ray.federation.fedbuff import FedBuff
from fuss_ray.federation.reduction import ClientRecord
from fuss_ray.federation.server_update import server_update_for
from fuss_ray.federation.strategies.base import Strategy
from fuss_ray.federation.systems import RoundPlan, SystemsModel
from fuss_ray.federation.types import ModelState
from fuss_ray.metrics.evaluate import evaluate_state
from fuss_ray.models.head import FussModel
from fuss_ray.seeds import Stream, seed_stream


def clients_per_round(fed: FederationConfig, num_clients: int) -> int:
    """A fraction of the clients, rounded up, at least min_clients and at most all of them."""
    return min(num_clients, max(fed.min_clients, math.ceil(fed.fraction * num_clients)))


def centroid_alignment(records: list[ClientRecord]) -> dict[str, float] | None:
    """Over a round's accepted clients: the share whose centroids are no longer
    index-aligned with the global ones (their optimal-transport plan is not the identity),
    and the mean distance of their centroids to the global centroid of the same index and
    to the matched one. Index-wise averaging pairs the first; matching, the second."""
    measured = [r for r in records if r.aligned is not None]
    if not measured:
        return None
    return {
        "misaligned": float(np.mean([not r.aligned for r in measured])),
        "gap_index": float(np.mean([r.gap_index for r in measured])),
        "gap_matched": float(np.mean([r.gap_matched for r in measured])),
    }


@dataclass
class Scores:
    """One split's scores: the global model's, or the mean over clients' own models."""

    miou: float
    pixel_acc: float
    per_client: list[dict[str, float]] = field(default_factory=list)


@dataclass
class RoundResult:
    round: int
    miou: float | None  # the test split (None when the run does not score it)
    pixel_acc: float | None
    seconds: float
    clients: list[int]
    mean_loss: float
    client_losses: list[float] = field(default_factory=list)
    bytes_sent: int = 0  # server -> clients: the broadcast, once per sampled client
    bytes_received: int = 0  # clients -> server: their updates
    per_client: list[dict[str, float]] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)  # client id -> reason
    failures: FailureReport = field(default_factory=FailureReport)
    plan: RoundPlan | None = None  # the systems model's timeline, when it is on
    sim_clock_s: float | None = None
    val_miou: float | None = None  # the validation split (None without one)
    val_pixel_acc: float | None = None
    alignment: dict[str, float] | None = None  # see `centroid_alignment`
    asynchrony: dict[str, Any] | None = None  # asynchronous mode: staleness, arrivals

    def summary(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "miou": self.miou,
            "pixel_acc": self.pixel_acc,
            "val_miou": self.val_miou,
            "val_pixel_acc": self.val_pixel_acc,
            "alignment": self.alignment,
            **({"async": self.asynchrony} if self.asynchrony is not None else {}),
            **({"sim_clock_s": self.sim_clock_s} if self.plan is None and self.sim_clock_s else {}),
            "seconds": self.seconds,
            "num_sampled": len(self.clients),
            "mean_loss": self.mean_loss,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "rejected": {str(k): v for k, v in self.rejected.items()},
            "failed_actors": self.failures.failed_actors,
            "retried_clients": self.failures.retried_clients,
            "lost_clients": self.failures.lost_clients,
            **self._systems_summary(),
        }

    def _systems_summary(self) -> dict[str, Any]:
        if self.plan is None:
            return {}
        return {
            "sim_seconds": self.plan.duration_s,
            "sim_clock_s": self.sim_clock_s,
            "client_outcomes": self.plan.counts(),
            "timeline": [
                {
                    "client_id": t.client_id,
                    "status": t.status,
                    "finish_s": t.finish_s if math.isfinite(t.finish_s) else None,
                    "download_bytes": t.download_bytes,
                    "upload_bytes": t.upload_bytes,
                }
                for t in self.plan.timelines
            ],
        }

    def metrics(self) -> dict[str, float]:
        """The per-round numbers for the tracker, quantiles over clients included."""
        scored = {
            "miou": self.miou,
            "pixel_acc": self.pixel_acc,
            "val_miou": self.val_miou,
            "val_pixel_acc": self.val_pixel_acc,
        }
        out = {
            **{k: v for k, v in scored.items() if v is not None},
            **{f"centroids_{k}": v for k, v in (self.alignment or {}).items()},
            "mean_loss": self.mean_loss,
            "seconds": self.seconds,
            "bytes_sent": float(self.bytes_sent),
            "bytes_received": float(self.bytes_received),
            "clients_sampled": float(len(self.clients)),
            "rejected_updates": float(len(self.rejected)),
            "failed_actors": float(self.failures.failed_actors),
            "retried_clients": float(self.failures.retried_clients),
            "lost_clients": float(len(self.failures.lost_clients)),
        }
        if self.plan is not None and self.sim_clock_s is not None:
            out["sim_seconds"] = self.plan.duration_s
            out["sim_clock_s"] = self.sim_clock_s
            for status, n in self.plan.counts().items():
                out[f"clients_{status}"] = float(n)
        if self.asynchrony is not None and self.sim_clock_s is not None:
            out["sim_clock_s"] = self.sim_clock_s
            out.update({f"async_{k}": float(v) for k, v in self.asynchrony.items()})
        series = {
            "client_loss": self.client_losses,
            "client_miou": [c["miou"] for c in self.per_client],
        }
        for name, values in series.items():
            if values:
                for q in (10, 50, 90):
                    out[f"{name}_p{q}"] = float(np.percentile(values, q))
        return out


class Server:
    """Runs rounds; holds the global state (or, for local-only, every client's)."""

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
        self.config = config
        self.strategy = strategy
        self.shape = strategy.run_shape()  # asked once: every round reads it
        self.update = server_update_for(strategy, config.federation)
        self.executor = executor
        self.client_ids = sorted(client_ids)
        strategy.attach(len(self.client_ids), executor.total_samples)
        self.eval_store = eval_store  # the test split; None where it must not be read
        self.val_store = val_store
        self.model = model
        self.state = initial_state
        self.client_states: dict[int, ModelState] = {}
        self.participation: dict[int, int] = dict.fromkeys(self.client_ids, 0)
        self.last_loss: dict[int, float] = {}
        self.systems = (
            SystemsModel(config.systems, config.seed, self.client_ids)
            if config.systems.enabled
            else None
        )
        self.arrivals = self._arrivals()

    def _arrivals(self) -> Arrivals:
        if self.config.federation.mode == "async":
            return FedBuff(self)
        return Rounds(self)

    def target(self) -> int:
        """How many updates a round wants (see clients_per_round)."""
        return clients_per_round(self.config.federation, len(self.client_ids))

    def export(self) -> tuple[ArrayTree, dict[str, Any]]:
        """Arrays and JSON-able bookkeeping for a checkpoint (see federation.checkpoint)."""
        arrays: ArrayTree = {"global": self.state, "strategy": self.update.state_dict()}
        arrays.update({f"client:{c}": s for c, s in self.client_states.items()})
        meta = {
            "participation": {str(c): n for c, n in self.participation.items()},
            "last_loss": {str(c): v for c, v in self.last_loss.items()},
            "systems": self.systems.state() if self.systems is not None else {},
        }
        in_flight, in_flight_meta = self.arrivals.export()
        arrays.update(in_flight)
        if in_flight_meta is not None:
            meta["async"] = in_flight_meta
        return arrays, meta

    def restore(self, arrays: ArrayTree, meta: dict[str, Any]) -> None:
        """Undo `export`: the server continues exactly where the checkpoint left it."""
        self.state = arrays["global"]
        self.update.load_state_dict(arrays.get("strategy", {}))
        self.client_states = {
            int(k.partition(":")[2]): v for k, v in arrays.items() if k.startswith("client:")
        }
        self.participation = {int(c): int(n) for c, n in meta["participation"].items()}
        self.last_loss = {int(c): float(v) for c, v in meta["last_loss"].items()}
        if self.systems is not None:
            self.systems.restore(meta.get("systems", {}))
        self.arrivals.restore(arrays, meta.get("async"))

    def sample(self, server_round: int) -> list[int]:
        """Seeded sampling of a fraction of clients (at least min_clients).

        With the systems model on, `over_commit` times the target is sampled, since some
        will be late, offline or gone.
        """
        k = len(self.client_ids)
        m = self.target()
        if self.systems is not None:
            m = min(k, math.ceil(m * self.config.systems.over_commit))
        rng = np.random.default_rng(seed_stream(Stream.SAMPLING, self.config.seed, server_round))
        picked = rng.choice(k, size=m, replace=False)
        return sorted(self.client_ids[int(i)] for i in picked)

    def evaluate(self, store: FeatureStore | None) -> Scores | None:
        """Global model scores on one split; for local-only, the mean over every client's
        own model (with the list). None for a split the run does not have or score."""
        if store is None:
            return None
        num_classes = self.config.data.num_classes
        models = self.scored_models()
        if None in models:
            s = evaluate_state(self.model, models[None], store, num_classes)
            return Scores(s["miou"], s["pixel_acc"])
        per_client = []
        for cid, state in models.items():
            assert cid is not None
            s = evaluate_state(self.model, state, store, num_classes)
            per_client.append({"client_id": cid, "miou": s["miou"], "pixel_acc": s["pixel_acc"]})
        return Scores(
            float(np.mean([c["miou"] for c in per_client])),
            float(np.mean([c["pixel_acc"] for c in per_client])),
            per_client,
        )

    def scored_models(self) -> dict[int | None, ModelState]:
        """What the run is scored on: the global model (key None) or each client's own."""
        return self.shape.scored_models(self.state, self.client_states, self.client_ids)

    def _scored(self, result: RoundResult) -> RoundResult:
        """The round's result with its test and validation scores filled in."""
        test, val = self.evaluate(self.eval_store), self.evaluate(self.val_store)
        if test is not None:
            result.miou, result.pixel_acc, result.per_client = (
                test.miou,
                test.pixel_acc,
                test.per_client,
            )
        if val is not None:
            result.val_miou, result.val_pixel_acc = val.miou, val.pixel_acc
        return result

    def evaluate_result(self, server_round: int) -> RoundResult:
        """Scores of the current state with no training (a run resumed after its end)."""
        empty = RoundResult(server_round, None, None, 0.0, [], float("nan"))
        return self._scored(empty)

    def run_round(self, server_round: int) -> RoundResult:
        """One server update: what arrives (a round's cohort, or a full FedBuff buffer),
        merged into the next global state, then scored."""
        started = time.perf_counter()
        got = self.arrivals.collect(server_round)
        buffer = got.buffer
        for rec in buffer.records():
            self.participation[rec.client_id] += 1
            self.last_loss[rec.client_id] = rec.loss
        accepted = buffer.accepted()
        if accepted:  # with every update rejected the global state stays as it was
            self.state = self.update.merge(buffer, server_round)
            self.client_states.update(self.shape.client_models(buffer))
        self.arrivals.applied()
        result = RoundResult(
            round=server_round,
            miou=None,
            pixel_acc=None,
            seconds=0.0,
            clients=got.clients,
            mean_loss=float(np.mean([r.loss for r in accepted])) if accepted else float("nan"),
            client_losses=[r.loss for r in accepted],
            bytes_sent=got.bytes_sent,
            bytes_received=got.bytes_received,
            plan=got.plan,
            sim_clock_s=got.sim_clock_s,
            rejected={**buffer.rejected(), **got.lost},
            failures=self.executor.last_failures,
            alignment=centroid_alignment(accepted),
            asynchrony=got.asynchrony,
        )
        self._scored(result)
        result.seconds = time.perf_counter() - started
        return result
