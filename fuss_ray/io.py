"""Atomic file output: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; rename it over `path` on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that becomes `path` when the block succeeds.

    If another process published `path` meanwhile (two runs extracting the same cache),
    the first one wins and this copy is discarded: both hold the same content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def exclusive(path: Path, what: str = "it") -> Iterator[None]:
    """Hold the lock file beside `path` while making `path`; say so when waiting for it.

    For things several processes may need at once and that must be made once (a feature
    cache, converted weights): the first makes it, the others wait, then find it made.
    """
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.parent / f".{path.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("%s: another process is making %s; waiting", path, what)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def sweep_temporaries(folder: Path) -> list[Path]:
    """Delete what `atomic_path` left under temporary names when a writer was killed.

    Only for folders one process owns at a time (a run's output folder): a temporary file
    there is a dead writer's, never a live one's.
    """
    swept = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for path in swept:
        path.unlink(missing_ok=True)
    return swept


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
