"""How client updates reach the server, as `Buffer`s to merge: a synchronous round's
cohort here, FedBuff's clock in `fedbuff.py`. The server (`server.py`) runs one loop over
either."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from fuss_ray.config import RunConfig
from fuss_ray.federation.buffer import Buffer
from fuss_ray.federation.checkpoint import ArrayTree
from fuss_ray.federation.executor import Executor
from fuss_ray.federation.reduction import Reduced
from fuss_ray.federation.server_update import ServerUpdate
from fuss_ray.federation.strategies.base import Strategy
from fuss_ray.federation.systems import RoundPlan, SystemsModel
from fuss_ray.federation.types import ModelState


class Server(Protocol):
    """What an arrival process reads of the server (`server.Server`) it feeds."""

    config: RunConfig
    strategy: Strategy[Any]
    update: ServerUpdate
    executor: Executor
    systems: SystemsModel | None
    client_ids: list[int]
    state: ModelState

    def sample(self, server_round: int) -> list[int]: ...

    def target(self) -> int: ...


def state_bytes(state: ModelState) -> int:
    """What one copy of a state costs on the wire (its raw array bytes)."""
    return int(sum(v.nbytes for v in state.values()))


@dataclass
class Arrived:
    """What an arrival process hands the server for one update."""

    buffer: Buffer
    clients: list[int]  # the clients the update reports on
    bytes_sent: int
    bytes_received: int
    plan: RoundPlan | None = None
    sim_clock_s: float | None = None
    lost: dict[int, str] = field(default_factory=dict)  # trained, but never came back
    asynchrony: dict[str, Any] | None = None


class Arrivals(ABC):
    """How client updates reach the server: a cohort per round, or FedBuff's clock."""

    def __init__(self, server: Server) -> None:
        self.server = server

    @abstractmethod
    def collect(self, server_round: int) -> Arrived:
        """Train until the next update can be made; what it merges."""

    def applied(self) -> None:  # noqa: B027  (optional hook)
        """Told once the update is made (FedBuff restarts a client from the new model)."""

    def export(self) -> tuple[ArrayTree, dict[str, Any] | None]:
        """What is in flight, for a checkpoint (nothing between synchronous rounds)."""
        return {}, None

    def restore(self, arrays: ArrayTree, meta: dict[str, Any] | None) -> None:  # noqa: B027
        """Undo `export`."""


class Rounds(Arrivals):
    """Synchronous rounds: a sampled cohort trains from the current model and arrives
    whole (the systems model drops the late and the gone), one fresh group."""

    def collect(self, server_round: int) -> Arrived:
        s = self.server
        clients = s.sample(server_round)
        size = state_bytes(s.state)  # one model state on the simulated wire
        sent = size * len(clients)
        plan = None
        if s.systems is not None:
            plan = s.systems.plan(
                server_round, clients, s.target(), s.config.train.local_steps, size, size
            )
            sent = sum(t.download_bytes for t in plan.timelines)
            clients = plan.kept  # only updates that arrive in time are ever trained
        shifts = s.update.grid(s.state, s.executor.total_samples)
        reduced = (
            s.executor.train_reduced(s.strategy.broadcast(s.state), shifts, clients, server_round)
            if clients
            else Reduced(shifts=shifts)
        )
        return Arrived(
            buffer=Buffer.round(s.state, server_round - 1, reduced),
            clients=clients,
            bytes_sent=sent,
            bytes_received=size * len(reduced.records),
            plan=plan,
            sim_clock_s=s.systems.clock_s if s.systems is not None else None,
        )
