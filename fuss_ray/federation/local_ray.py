"""Starting (or joining) Ray, and cleaning up after a local Ray whose driver was killed.

Without an address fuss-ray starts its own local Ray. Ray ties its GCS and raylet to the
driver, but when the driver is SIGKILLed the raylet's agents (dashboard agent, runtime-env
agent) outlive it: about 150 MB each, forever. So every driver that starts a local Ray
records the Ray processes under it in a small registry file; the next fuss-ray start on
the machine (a `--resume`, say) kills those of drivers that are gone, matching each
process by pid and start time so that a reused pid is never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_started_here = False  # this process started the local Ray it is connected to


def registry_dir() -> Path:
    """One folder per user, under the system's temporary directory."""
    return Path(tempfile.gettempdir()) / f"fuss-ray-{os.getuid()}" / "local-ray"


def _identity(pid: int) -> tuple[int, float] | None:
    import psutil

    try:
        return pid, psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _alive(pid: int, created: float) -> bool:
    found = _identity(pid)
    return found is not None and abs(found[1] - created) < 1e-3


def _record_path() -> Path:
    me = _identity(os.getpid())
    assert me is not None
    return registry_dir() / f"{me[0]}-{me[1]:.3f}.json"


def record_local_ray() -> None:
    """Write (or refresh) this driver's record of the Ray processes it started.

    Called once Ray is up and again once the actors are (Ray starts some of its agents
    late); a no-op in a process that joined a Ray it did not start.
    """
    import psutil

    if not _started_here:
        return

    me = psutil.Process()
    children = []
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            children.append({"pid": child.pid, "created": child.create_time()})
    path = _record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"driver": {"pid": me.pid, "created": me.create_time()}, "children": children})
    )
    os.replace(tmp, path)


def forget_local_ray() -> None:
    """This driver is ending normally: Ray's own shutdown stops its processes."""
    with contextlib.suppress(OSError):
        _record_path().unlink()


def reap_orphans() -> int:
    """Kill the Ray processes of drivers that died without shutting Ray down; how many."""
    import signal

    killed = 0
    folder = registry_dir()
    if not folder.is_dir():
        return 0
    for path in folder.glob("*.json"):
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        driver = record.get("driver", {})
        if _alive(int(driver.get("pid", -1)), float(driver.get("created", 0.0))):
            continue
        for child in record.get("children", []):
            if _alive(int(child["pid"]), float(child["created"])):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(child["pid"]), signal.SIGKILL)
                    killed += 1
        with contextlib.suppress(OSError):
            path.unlink()
    if killed:
        log.warning("stopped %d Ray process(es) left behind by a killed fuss-ray run", killed)
    return killed


def local_cpus(extra: float = 0.0) -> int:
    """The CPUs a local Ray offers: this process's cores, plus `extra` logical ones."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) + math.ceil(extra)


def init_ray(address: str | None, extra_local_cpus: float = 0.0, **kwargs: Any) -> None:
    """Join the cluster at `address` (else at `RAY_ADDRESS`, as `ray job submit` and Ray's
    own tools set it), or start a local Ray and keep a record of it.

    A local Ray offers the machine's cores plus `extra_local_cpus`: the server actor's
    share, since it and the hosts take turns (it waits while they train, they wait while
    it aggregates and scores), so a laptop's cores all go to the hosts. It prestarts no
    idle workers: a run's workers are its actors (hosts, the server), which Ray starts
    for them, and the prestarted ones cost a 2-core machine about 1.5 core-seconds and
    2 s per run (measured with `fuss-ray run` on the quickstart shrunk to 40 images, 4
    clients and 2 rounds of 2 steps).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, **kwargs)
        return
    global _started_here
    reap_orphans()
    if extra_local_cpus > 0:
        kwargs.setdefault("num_cpus", local_cpus(extra_local_cpus))
    kwargs.setdefault("_system_config", {"enable_worker_prestart": False})
    ray.init(address="local", **kwargs)  # never a stray cluster found on this machine
    _started_here = True
    record_local_ray()
    atexit.register(forget_local_ray)
