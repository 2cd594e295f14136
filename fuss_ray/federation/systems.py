"""Systems heterogeneity on a virtual clock: device speed, bandwidth, availability, dropouts.

Real federations are not synchronous: phones are slow or offline, uplinks are thin, and a
server that waits for everyone waits forever. This model decides, per round and before
anything trains, when each sampled client would deliver its update in simulated seconds:

    finish = download_bytes / download_rate + local_steps x step_seconds / speed
             + upload_bytes / upload_rate

Each client's speed and rates are drawn once (lognormal around the configured medians, or
read from trace files); availability and mid-round dropout are drawn per (client, round).
All draws are seeded from (seed, client[, round]), so a run's timeline is reproducible and
independent of where clients execute. The server then keeps the first `target` clients
that finish before the deadline (over-commitment samples more than it needs) and only
those train: a straggler's or a dropout's work could never reach the server, and since the
timeline does not depend on what training computes, skipping it changes no result.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fuss_ray.config import SystemsConfig
from fuss_ray.errors import UserError
from fuss_ray.seeds import Stream, seed_stream

KEPT, LATE, EXTRA, DROPPED, UNAVAILABLE = "kept", "late", "extra", "dropped", "unavailable"


@dataclass(frozen=True)
class ClientTimeline:
    """One sampled client's round, in simulated seconds from the round's start."""

    client_id: int
    status: str
    finish_s: float  # when its update would arrive (inf: never)
    download_bytes: int
    upload_bytes: int  # counted only for updates the server accepted


@dataclass
class RoundPlan:
    """Who trains this round and how long the round lasts on the virtual clock."""

    kept: list[int]
    duration_s: float
    timelines: list[ClientTimeline] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((KEPT, LATE, EXTRA, DROPPED, UNAVAILABLE), 0)
        for t in self.timelines:
            out[t.status] += 1
        return out


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"systems.{what}: {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"systems.{what}: {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"systems.{what}: {path} must map client ids to values")
    return data


class SystemsModel:
    """The virtual clock and the per-client device model of one run."""

    def __init__(self, cfg: SystemsConfig, seed: int, client_ids: list[int]) -> None:
        self.cfg = cfg
        self.seed = seed
        self.clock_s = 0.0
        self.speed: dict[int, float] = {}
        self.down_rate: dict[int, float] = {}  # bytes per simulated second
        self.up_rate: dict[int, float] = {}
        speeds = _read_json(cfg.speed_trace, "speed_trace") if cfg.speed_trace else {}
        self.windows: dict[int, list[tuple[float, float]]] | None = None
        if cfg.availability_trace is not None:
            raw = _read_json(cfg.availability_trace, "availability_trace")
            self.windows = {int(k): [(float(a), float(b)) for a, b in v] for k, v in raw.items()}
        for c in client_ids:
            rng = np.random.default_rng(seed_stream(Stream.DEVICE, seed, c))
            spread = rng.standard_normal(3)
            if speeds:
                if str(c) not in speeds:
                    raise UserError(f"systems.speed_trace: no speed for client {c}")
                self.speed[c] = float(speeds[str(c)])
            else:
                self.speed[c] = math.exp(cfg.speed_sigma * spread[0])
            bw = cfg.bandwidth_sigma
            self.down_rate[c] = cfg.download_mbps * 125_000 * math.exp(bw * spread[1])
            self.up_rate[c] = cfg.upload_mbps * 125_000 * math.exp(bw * spread[2])

    def _available(self, client: int, server_round: int, start: float) -> tuple[bool, float]:
        """Online at the round's start, and until when (inf: the whole round)."""
        if self.windows is not None:
            for a, b in self.windows.get(client, []):
                if a <= start < b:
                    return True, b - start
            return False, 0.0
        rng = np.random.default_rng(
            seed_stream(Stream.AVAILABILITY, self.seed, client, server_round)
        )
        return bool(rng.random() < self.cfg.availability), math.inf

    def client_time(
        self,
        client: int,
        key: int,
        start_s: float,
        local_steps: int,
        download_bytes: int,
        upload_bytes: int,
    ) -> tuple[str, float]:
        """One client's work started at `start_s` on the clock: (status, seconds it takes).

        KEPT with its duration; UNAVAILABLE (offline at the start) with inf; DROPPED (gone
        before it could upload) with the time at which it leaves: the end of its online
        window, or, for a random dropout, when its upload should have come (when an
        asynchronous server notices). `key` makes its draws unique: the round, or in
        asynchronous mode the dispatch.
        """
        online, left = self._available(client, key, start_s)
        if not online:
            return UNAVAILABLE, math.inf
        cfg = self.cfg
        finish = (
            download_bytes / self.down_rate[client]
            + local_steps * cfg.step_seconds / self.speed[client]
            + upload_bytes / self.up_rate[client]
        )
        rng = np.random.default_rng(seed_stream(Stream.DROPOUT, self.seed, client, key))
        if rng.random() < cfg.dropout or finish > left:  # gone before it could upload
            return DROPPED, min(finish, left)
        return KEPT, finish

    def plan(
        self,
        server_round: int,
        sampled: list[int],
        target: int,
        local_steps: int,
        download_bytes: int,
        upload_bytes: int,
    ) -> RoundPlan:
        """Decide who delivers in time; advance the clock by the round's duration."""
        cfg = self.cfg
        deadline = cfg.deadline_s if cfg.deadline_s is not None else math.inf
        drafts: list[tuple[float, int, str]] = []
        for c in sampled:
            status, finish = self.client_time(
                c, server_round, self.clock_s, local_steps, download_bytes, upload_bytes
            )
            if status == KEPT and finish > deadline:
                status = LATE
            drafts.append((finish if status in (KEPT, LATE) else math.inf, c, status))
        in_time = sorted((f, c) for f, c, s in drafts if s == KEPT)
        kept = {c for _, c in in_time[:target]}
        timelines = []
        for f, c, s in drafts:
            status = EXTRA if s == KEPT and c not in kept else s
            up = upload_bytes if status == KEPT else 0
            down = 0 if s == UNAVAILABLE else download_bytes
            timelines.append(ClientTimeline(c, status, f, down, up))
        if len(kept) >= target and kept:
            duration = in_time[target - 1][0]  # the server closes the round at its target
        elif math.isfinite(deadline):
            duration = deadline  # it waited until the deadline for more
        else:
            finite = [f for f, _, _ in drafts if math.isfinite(f)]
            duration = max(finite, default=0.0)
        self.clock_s += duration
        return RoundPlan(sorted(kept), duration, sorted(timelines, key=lambda t: t.client_id))

    def state(self) -> dict[str, float]:
        return {"clock_s": self.clock_s}

    def restore(self, state: dict[str, float]) -> None:
        self.clock_s = float(state.get("clock_s", 0.0))
