"""Round checkpoints: everything a killed simulation needs to continue bit for bit.

A checkpoint is one folder `OUT/checkpoints/round-NNNNNN/`, built under a temporary name and
renamed into place only when complete, then named in `OUT/checkpoints/LATEST` (itself
replaced atomically). A crash at any moment therefore leaves the previous checkpoint whole:
a half-written folder keeps its temporary name and is ignored and swept on the next start.

What is stored:
- `server.npz`: the global state, the strategy's own state (FedAvgM velocity) and, for
  local-only training, the server's copy of every client's state;
- `clients-AAAA.npz`: written by each client host (actor) for its own clients, holding
  their persistent state (MOON's previous model, local-only models); hosts write in
  parallel and nothing passes through the driver;
- `meta.json`: the round, the config and its hash, the MLflow run id, participation and
  losses, the per-round summaries so far, elapsed time, and which file holds which client.

Client randomness needs no saving: every draw of client k in round r is seeded from
(seed, k, r), and Adam is re-created each round as in the paper.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fuss_ray.io import atomic_path

FORMAT = 1
LATEST = "LATEST"
_ROUND_DIR = re.compile(r"^round-(\d{6})$")
_SEP = "::"

ArrayTree = dict[str, dict[str, NDArray[Any]]]


def save_tree(path: Path, tree: ArrayTree) -> None:
    """Two-level dict of arrays -> one .npz (no pickle, so loading runs no code)."""
    flat = {
        f"{group}{_SEP}{key}": value
        for group, items in tree.items()
        for key, value in items.items()
    }
    with path.open("wb") as fh:
        np.savez(fh, **flat)  # type: ignore[arg-type]


def load_tree(path: Path) -> ArrayTree:
    tree: ArrayTree = {}
    with np.load(path, allow_pickle=False) as data:
        for name in data.files:
            group, _, key = name.partition(_SEP)
            tree.setdefault(group, {})[key] = data[name]
    return tree


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint on disk."""

    path: Path
    meta: dict[str, Any]

    @property
    def round(self) -> int:
        return int(self.meta["round"])

    def server_tree(self) -> ArrayTree:
        return load_tree(self.path / "server.npz")

    def client_tree(self, client_ids: list[int]) -> ArrayTree:
        """The persistent state of the given clients, from whichever host files hold them."""
        wanted = {str(c) for c in client_ids}
        files = sorted({f for c, f in self.meta["client_files"].items() if c in wanted})
        tree: ArrayTree = {}
        for name in files:
            for group, items in load_tree(self.path / name).items():
                if group.partition(":")[2] in wanted:
                    tree[group] = items
        return tree


def _complete(path: Path) -> Checkpoint | None:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or not (path / "server.npz").is_file():
        return None
    return Checkpoint(path, meta)


def latest_checkpoint(root: Path) -> Checkpoint | None:
    """The newest complete checkpoint: the one LATEST names, else the highest round."""
    if not root.is_dir():
        return None
    try:
        named = _complete(root / (root / LATEST).read_text().strip())
    except OSError:
        named = None
    if named is not None:
        return named
    rounds = sorted(
        (p for p in root.iterdir() if _ROUND_DIR.match(p.name) and p.is_dir()), reverse=True
    )
    for path in rounds:
        found = _complete(path)
        if found is not None:
            return found
    return None


class CheckpointWriter:
    """Builds one checkpoint folder in private, then publishes it with a rename."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self.keep = keep
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".round-*"):  # left by a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)

    def staging(self, server_round: int) -> Path:
        """A fresh private folder for round `server_round`'s files."""
        path = Path(tempfile.mkdtemp(prefix=f".round-{server_round:06d}.", dir=self.root))
        path.chmod(0o755)  # readable like any other output, by other nodes' users too
        return path

    def publish(
        self, staging: Path, server_round: int, server: ArrayTree, meta: dict[str, Any]
    ) -> Checkpoint:
        """Write the server's part and meta.json last, then rename and point LATEST at it."""
        save_tree(staging / "server.npz", server)
        full = {"format": FORMAT, "round": server_round, **meta}
        (staging / "meta.json").write_text(json.dumps(full))
        final = self.root / f"round-{server_round:06d}"
        if final.exists():  # the same round written again after a resume
            shutil.rmtree(final)
        os.rename(staging, final)
        with atomic_path(self.root / LATEST) as tmp:
            tmp.write_text(final.name + "\n")
        self._prune()
        return Checkpoint(final, full)

    def _prune(self) -> None:
        rounds = sorted(p for p in self.root.iterdir() if _ROUND_DIR.match(p.name))
        for old in rounds[: max(0, len(rounds) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)
