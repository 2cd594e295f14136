"""Logical clients and the host that runs many of them in one process (or one Ray actor).

A host keeps each client's private shard (positions into the memory-mapped feature cache),
its kNN table and whatever state must persist between rounds; one shared model object is
re-loaded per client, so an extra logical client costs its index arrays and, only where the
strategy needs it, its own state. Every random draw of client k in round r comes from seeds
derived from (seed, k, r), so results do not depend on which host runs which client.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fuss_ray.config import RunConfig
from fuss_ray.features.cache import FeatureStore
from fuss_ray.features.knn import image_descriptors, mine_knn
from fuss_ray.federation.checkpoint import ArrayTree, latest_checkpoint, save_tree
from fuss_ray.federation.objective import LocalRun, StackRun
from fuss_ray.federation.reduction import Reduced, reduce_updates
from fuss_ray.federation.server_update import server_update_for
from fuss_ray.federation.steps import (
    ShardFeatures,
    Stack,
    StepPlan,
    StepSettings,
    plan_steps,
    reuse_freed_memory,
    run_stacked_steps,
    run_steps,
    shard_budget,
)
from fuss_ray.federation.strategies import strategy_for
from fuss_ray.federation.types import CENTROIDS, Arrays, Broadcast, ClientUpdate
from fuss_ray.losses import CorrespondenceLoss
from fuss_ray.models.head import FussModel, ModelState, load_model_state, model_state
from fuss_ray.models.stacked import draw_masks, reference_head, stack_states, unstack_states
from fuss_ray.plugins import receive
from fuss_ray.seeds import Stream, seed_stream

CLIENT_GROUP = "client:"  # checkpoint groups: what each client's objective keeps
_LEGACY_GROUPS = ("states:", "previous:")  # the same, as checkpoints before 0.2 named it


@dataclass(frozen=True)
class HostSpec:
    """Everything a host needs, small enough to send to an actor once."""

    config: dict[str, Any]
    store_path: str
    clients: dict[int, list[int]]  # client id -> positions in the training feature store
    threads: int = 1
    # The run's checkpoints folder: a host (re)started with one restores its clients'
    # persistent state from the newest checkpoint there (a resumed run, a restarted actor).
    restore_dir: str | None = None
    # Set where nodes share no file system: the cache's shards in the Ray object store.
    store_refs: list[Any] | None = None
    store_meta: dict[str, Any] | None = None
    # Seeded feature maps generated on the host per block of images, instead of a cache:
    # {"seed": int, "num_images": int, "shape": [D, h, w], "block": int}. For benchmarks
    # and tests of the executors that need no dataset (see features/generated.py).
    generated: dict[str, Any] | None = None
    # Strategies (and datasets) registered where the host cannot import them, by value
    # (`fuss_ray.plugins.shipment`): a class written in the user's notebook or __main__.
    shipped: bytes | None = None


def client_seed(seed: int, client_id: int, server_round: int) -> int:
    """A 63-bit seed unique to (run seed, client, round)."""
    return int(
        np.random.SeedSequence([seed, client_id, server_round]).generate_state(2, np.uint64)[0] >> 1
    )


def centroid_order(seed: int, client_id: int, count: int) -> NDArray[np.int64]:
    """A client's private order of the centroids: its row j holds global centroid order[j]."""
    rng = np.random.default_rng(seed_stream(Stream.CENTROID_ORDER, seed, client_id))
    return rng.permutation(count).astype(np.int64)


def build_model(config: RunConfig, in_dim: int) -> FussModel:
    return FussModel(in_dim, config.model.code_dim, config.num_centroids, config.model.dropout)


def training_device(
    device: str, num_gpus: float, gpu_memory_fraction: float | None
) -> torch.device:
    """Where this process trains, capping its GPU memory when the GPU is shared.

    Ray exposes a GPU to an actor only when it reserved one (num_gpus > 0), so `auto` puts
    CPU actors on the CPU even on a GPU node. With a fractional reservation the caching
    allocator is capped at that fraction (or `gpu_memory_fraction`): an actor that outgrows
    its share fails alone with an out-of-memory error instead of starving its neighbours.
    """
    from fuss_ray.errors import UserError

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(
            "federation.device: 'cuda' but this process sees no GPU (set federation.num_gpus "
            "so that Ray gives each actor one, or use device: auto)"
        )
    share = gpu_memory_fraction
    if share is None and 0 < num_gpus < 1:
        share = num_gpus
    if share is not None:
        torch.cuda.set_per_process_memory_fraction(share, 0)
    return torch.device("cuda", 0)


class ClientHost:
    """Hosts several logical clients; used directly (sequential) or as a Ray actor."""

    def __init__(self, spec: HostSpec) -> None:
        torch.set_num_threads(spec.threads)
        reuse_freed_memory()
        receive(spec.shipped)  # before the config is checked: it may name a shipped class
        self.config = RunConfig.model_validate(spec.config)
        self.spec = spec
        fed = self.config.federation
        self.device = training_device(fed.device, fed.num_gpus, fed.gpu_memory_fraction)
        share = fed.gpu_memory_fraction or (fed.num_gpus if 0 < fed.num_gpus < 1 else None)
        self.shard_budget = shard_budget(self.device, share)
        self.store = self._open_store(spec, self.config, self.device)
        self.image_bytes = self._image_bytes()  # what moving a client's shard costs
        self.indices = {c: np.asarray(i, dtype=np.int64) for c, i in spec.clients.items()}
        # Each client's kNN table is mined on its first training here (`_knn`), so that
        # starting a host costs nothing per client: start-up grows with the clients that
        # train, not with those that exist.
        self.knn: dict[int, NDArray[np.int64]] = {}
        self.model = self._fresh_model()
        lc = self.config.loss
        self.loss_fn = CorrespondenceLoss(
            weights=(lc.weights.self_, lc.weights.knn, lc.weights.rand),
            shifts=(lc.shifts.self_, lc.shifts.knn, lc.shifts.rand),
            samples=lc.feature_samples,
            permutations=lc.rand_permutations,
        )
        tc = self.config.train
        self.steps = StepSettings(
            tc.lr_head, tc.lr_centroids, lc.cluster_weight, self.config.num_centroids
        )
        # The host's own copy of the strategy: its client objective (loss terms, what each
        # client keeps) and the per-client half of aggregation (summands, OT plans).
        self.strategy = strategy_for(self.config)
        self.update_rule = server_update_for(self.strategy, self.config.federation)
        self.objective = self.strategy.client_objective()
        # Clients trained as one stack (1: one at a time, the per-client path); an objective
        # without stacked hooks trains one at a time (the driver says so once).
        self.client_batch = self.objective.stack_size(fed.client_batch)
        self.kept: dict[int, Arrays] = {}  # what the objective keeps per client
        self.restored_round = 0
        if spec.restore_dir is not None:
            self._restore(Path(spec.restore_dir))

    @staticmethod
    def _open_store(spec: HostSpec, config: RunConfig, device: torch.device) -> Any:
        if spec.generated is not None:
            from fuss_ray.features.generated import GeneratedFeatures

            g = spec.generated
            return GeneratedFeatures(g["seed"], g["num_images"], tuple(g["shape"]), g["block"])
        if spec.store_refs is None or spec.store_meta is None:
            store = FeatureStore.open(Path(spec.store_path))
            if store.meta.get("mode") == "online":
                from fuss_ray.features.online import OnlineFeatures

                return OnlineFeatures(config, store.meta, device)
            return store
        import ray

        buffers = ray.get(spec.store_refs)  # zero-copy views of the node's shared memory
        return FeatureStore.from_buffers(Path(spec.store_path), buffers, spec.store_meta)

    def _client_view(self, cid: int, broadcast: Broadcast) -> Broadcast:
        """The broadcast as this client's model holds it: with `model.centroid_order:
        per_client`, every centroid array in the client's own order (it answers in it)."""
        if self.config.model.centroid_order == "shared":
            return broadcast
        order = centroid_order(self.config.seed, cid, self.config.num_centroids)

        def view(arrays: Arrays) -> Arrays:
            return {k: v[order] if k.endswith(CENTROIDS) else v for k, v in arrays.items()}

        return Broadcast(view(broadcast.state), view(broadcast.extras))

    def _knn(self, cid: int) -> NDArray[np.int64]:
        """The client's top-k neighbours among its own images, mined once and kept."""
        table = self.knn.get(cid)
        if table is None:
            features = self.store.gather(self.indices[cid])
            table = self.knn[cid] = mine_knn(image_descriptors(features), self.config.loss.knn_k)
        return table

    def _fresh_model(self) -> FussModel:
        """A model on this host's device. Its random initial values are drawn from a fork
        of torch's generator, so that building one (a strategy's reference copy, at a
        client's first step) never shifts the dropout masks of the training around it."""
        with torch.random.fork_rng(devices=[]):
            return build_model(self.config, self.store.feature_dim).to(self.device)

    def _restore(self, root: Path) -> None:
        ckpt = latest_checkpoint(root)
        if ckpt is None:
            return
        for group, arrays in ckpt.client_tree(sorted(self.indices)).items():
            if group.startswith((CLIENT_GROUP, *_LEGACY_GROUPS)):
                self.kept[int(group.partition(":")[2])] = arrays
        self.restored_round = ckpt.round

    def ready(self) -> int:
        """The number of clients hosted; lets the caller wait for construction."""
        return len(self.indices)

    def pid(self) -> int:
        """The hosting process (tests kill it to simulate a lost worker)."""
        return os.getpid()

    def node_id(self) -> str | None:
        """The Ray node this host runs on (None outside Ray)."""
        import ray

        if not ray.is_initialized():
            return None
        return str(ray.get_runtime_context().get_node_id())

    def persistent_state(self) -> ArrayTree:
        """What the hosted clients carry between rounds, keyed 'client:ID'."""
        return {f"{CLIENT_GROUP}{c}": arrays for c, arrays in self.kept.items()}

    def save(self, directory: str, name: str) -> list[int]:
        """Write this host's clients' persistent state into a checkpoint being built.

        Returns the ids saved (none when the strategy keeps no client state, and then no
        file is written): the driver records which file holds which client.
        """
        tree = self.persistent_state()
        if not tree:
            return []
        save_tree(Path(directory) / name, tree)
        return sorted({int(g.partition(":")[2]) for g in tree})

    def train(
        self,
        broadcast: Broadcast,
        client_ids: list[int],
        server_round: int,
        keys: dict[int, int] | None = None,
    ) -> list[ClientUpdate]:
        """Run local training for the given clients, in id order.

        `keys` (asynchronous mode) seeds each client's draws by its dispatch instead of
        the round, since one client may train twice between two server updates.
        """
        keys = keys or {}
        updates: list[ClientUpdate] = []
        with self._round_features(client_ids):
            for group in self._groups(client_ids):
                updates += self._train_group(group, broadcast, keys, server_round)
        return sorted(updates, key=lambda u: u.client_id)

    def _groups(self, client_ids: list[int]) -> list[list[int]]:
        """The clients in id order, one at a time, or (`client_batch` > 1) in stacks of up
        to that many clients that share a batch size (a stack's steps are one shape)."""
        ids = sorted(client_ids)
        if self.client_batch == 1:
            return [[c] for c in ids]
        by_batch: dict[int, list[int]] = {}
        for c in ids:
            by_batch.setdefault(self._batch_size(c), []).append(c)
        g = self.client_batch
        return [ids[i : i + g] for ids in by_batch.values() for i in range(0, len(ids), g)]

    def _train_group(
        self, group: list[int], broadcast: Broadcast, keys: dict[int, int], server_round: int
    ) -> list[ClientUpdate]:
        if self.client_batch == 1:
            return [self._train_one(group[0], broadcast, keys.get(group[0], server_round))]
        return self._train_stack(group, broadcast, [keys.get(c, server_round) for c in group])

    def _batch_size(self, cid: int) -> int:
        return min(self.config.train.batch_size, len(self.indices[cid]))

    def _round_features(self, client_ids: list[int]) -> Any:
        """Online features: extract every image these clients use, batched across them."""
        hold = getattr(self.store, "hold", None)
        if hold is None:
            return contextlib.nullcontext()
        return hold(np.concatenate([self.indices[c] for c in client_ids]).tolist())

    def train_reduced(
        self,
        broadcast: Broadcast,
        shifts: dict[str, int],
        client_ids: list[int],
        server_round: int,
    ) -> Reduced:
        """Train the given clients and fold their screened updates into one contribution.

        Each update is folded in as soon as it exists, so a host holds one client's state
        at a time however many it trains, and returns one message per round.
        """
        out = Reduced(shifts=dict(shifts))
        max_norm = self.config.federation.max_update_norm
        with self._round_features(client_ids):
            for group in self._groups(client_ids):
                for update in self._train_group(group, broadcast, {}, server_round):
                    out = out.merge(
                        reduce_updates(
                            self.update_rule, broadcast.state, shifts, [update], max_norm
                        )
                    )
        return out

    def _train_one(self, cid: int, broadcast: Broadcast, server_round: int) -> ClientUpdate:
        """Local training of one client: L_corr + L_cluster, plus its strategy's objective.

        The objective (`Strategy.client_objective`) chooses the starting state, adds its
        loss terms, and says what the client keeps for next time and sends besides.
        """
        cfg, objective = self.config, self.objective
        kept = self.kept.get(cid)
        broadcast = self._client_view(cid, broadcast)
        model = self.model
        load_model_state(model, objective.start_state(broadcast, kept))
        model.train()
        seed = client_seed(cfg.seed, cid, server_round)
        torch.manual_seed(seed)  # dropout masks
        plan = self._plan(cid, seed)
        run = LocalRun(
            cid, model, broadcast, kept, self.device, cfg.train.local_steps, self._fresh_model
        )
        objective.begin(run)
        counts, losses = run_steps(
            model, self._shard(cid), plan, self.loss_fn, self.steps, objective, run
        )
        state = model_state(model)
        return self._update(cid, state, counts, losses, objective.end(run, state))

    def _shard(self, cid: int) -> ShardFeatures:
        return ShardFeatures(
            self.store.gather, self.indices[cid], self.device, self.image_bytes, self.shard_budget
        )

    def _update(
        self,
        cid: int,
        state: ModelState,
        counts: NDArray[np.int64],
        losses: NDArray[np.float64],
        ended: tuple[Arrays | None, Arrays],
    ) -> ClientUpdate:
        """A trained client's update; what its objective keeps is kept here."""
        keep, extras = ended
        if keep is not None:
            self.kept[cid] = keep
        return ClientUpdate(
            client_id=cid,
            num_samples=len(self.indices[cid]),
            state=state,
            occupancy=counts / max(1, counts.sum()),
            loss=float(np.mean(losses)),
            extras=extras,
        )

    def _plan(self, cid: int, seed: int) -> StepPlan:
        steps = self.config.train.local_steps
        return plan_steps(
            len(self.indices[cid]), self._knn(cid), self._batch_size(cid), steps, seed, self.loss_fn
        )

    def _train_stack(
        self, cids: list[int], broadcast: Broadcast, rounds: list[int]
    ) -> list[ClientUpdate]:
        """Local training of clients that share a batch size, as one stacked computation.

        Each client's draws come from its own seeds exactly as `_train_one` draws them (its
        dropout masks from a generator seeded as that path seeds torch), so a client's
        result does not depend on the stack it is in.
        """
        cfg, objective = self.config, self.objective
        views = [self._client_view(c, broadcast) for c in cids]
        kept = [self.kept.get(c) for c in cids]
        starts = [objective.start_state(v, k) for v, k in zip(views, kept, strict=True)]
        params = stack_states(starts, self.device)
        seeds = [client_seed(cfg.seed, c, r) for c, r in zip(cids, rounds, strict=True)]
        plans = [self._plan(c, s) for c, s in zip(cids, seeds, strict=True)]
        masks = self._stack_masks(seeds, self._batch_size(cids[0]))
        stack = Stack([self._shard(c) for c in cids], plans, masks)
        run = StackRun(
            cids,
            params,
            views,
            kept,
            self.device,
            cfg.train.local_steps,
            head=reference_head,
            stack=lambda states: stack_states(states, self.device),
        )
        objective.begin_stack(run)
        counts, losses = run_stacked_steps(params, stack, self.loss_fn, self.steps, objective, run)
        states = unstack_states(params)
        ends = objective.end_stack(run, states)
        return [
            self._update(cid, states[j], counts[j], losses[j], ends[j])
            for j, cid in enumerate(cids)
        ]

    def _stack_masks(self, seeds: list[int], batch: int) -> torch.Tensor | None:
        """Every step's dropout masks of each client (S, calls, G * B, D'), as its own
        path would draw them: a mask per head call (the batch, then its kNN partners)."""
        calls = 2 if self.loss_fn.weights[1] else 1
        steps, p = self.config.train.local_steps, self.config.model.dropout
        dim = self.store.feature_dim
        per_client = []
        for seed in seeds:
            masks = draw_masks(batch, dim, p, steps * calls, torch.Generator().manual_seed(seed))
            if masks is None:  # no dropout: nothing drawn for any client
                return None
            per_client.append(masks.view(steps, calls, batch, dim))
        return torch.cat(per_client, dim=2).to(self.device)

    def _image_bytes(self) -> int:
        """Bytes of one image's feature map as training reads it (float32)."""
        shape = getattr(self.store, "shape", None) or self.store.meta["feature_shape"]
        return int(np.prod(shape)) * 4
