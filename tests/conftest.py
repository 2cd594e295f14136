"""Shared fixtures: offline hub, one session-scoped local Ray, one tiny feature cache."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def tiny_config_dict(cache_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A run small enough for tests: 32 scenes of 64 px, 4 clients, 2 rounds."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "data": {
            "dataset": "synthetic",
            "num_images": 32,
            "num_eval_images": 8,
            "num_classes": 3,
            "image_size": 64,
            "regions": [2, 4],
        },
        "partition": {"kind": "dirichlet", "num_clients": 4, "alpha": 0.5, "min_images": 2},
        "features": {"input_size": 64, "label_size": 32, "cache_dir": str(cache_dir)},
        "model": {"code_dim": 8},
        "train": {"rounds": 2, "local_steps": 2, "batch_size": 4},
        "federation": {
            "strategy": "fuss-maximin",
            "executor": "sequential",
            "clients_per_actor": 2,
        },
    }
    dataset = overrides.get("data.dataset", "synthetic")
    if dataset != "synthetic":  # the synthetic scenes' own settings are not another's
        from fuss_ray.plugins import DATASETS

        params = DATASETS[dataset].Params
        implied = params.implied_classes({}) is not None  # a benchmark's own class count
        cfg["data"] = {
            k: v
            for k, v in cfg["data"].items()
            if k in params.model_fields and not (implied and k == "num_classes")
        }
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


@pytest.fixture(scope="session", autouse=True)
def cli_logging() -> None:
    """Warnings reach stderr as the command line shows them, for tests that read them."""
    from fuss_ray.log import setup_cli_logging

    setup_cli_logging()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the whole session, so extraction happens once."""
    return tmp_path_factory.mktemp("fuss_cache")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray shared by every test that needs one (starting Ray costs seconds).

    Like fuss-ray's own local Ray it prestarts no idle workers: each command that joins
    it would otherwise get workers it never uses (about 3 core-seconds a command).
    """
    import ray

    from fuss_ray.federation.local_ray import local_cpus

    ray.init(
        address="local",  # a fresh instance, even if a `ray start` cluster runs here
        num_cpus=local_cpus(1.0),  # as fuss-ray's own local Ray: one more for the server actor
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        configure_logging=False,
        _system_config={"enable_worker_prestart": False},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_join(ray_session: None) -> dict[str, str]:
    """What a command run as a subprocess needs in its environment to join the session's
    Ray: its address, and where its auth token is (a test may give the command another
    HOME, where Ray would look for it).

    A command that starts its own local Ray spends about 17 core-seconds on Ray's own
    processes before it trains; the tests of what a run does on Ray share this one. The
    tests of a run's own Ray (it starts, it is cleaned up after a SIGKILL, its actors see
    the command's environment) start their own.
    """
    import ray

    env = {"RAY_ADDRESS": str(ray.get_runtime_context().gcs_address)}
    token = Path.home() / ".ray" / "auth_token"
    if token.is_file():
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return env


def job_env(ray_join: dict[str, str], **env_vars: str) -> dict[str, str]:
    """What a command joining the session's Ray needs so that every process of its job
    (actors, Tune trials) starts with `env_vars` in its environment: a PYTHONPATH holding
    an installed plugin, a hook. It is how `ray job submit --runtime-env-json` hands a
    job's runtime environment to its driver; the driver itself gets `env_vars` too.
    """
    import json

    runtime = {"runtime_env": {"env_vars": dict(env_vars)}}
    return {**ray_join, **env_vars, "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(runtime)}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules holding end-to-end (`slow`) tests first, each module's tests in order.

    With two workers taking whole modules (`make test`), the long modules start at once
    and the short ones fill the gaps, instead of the last long one running alone.
    """
    slow = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow)  # stable: order kept within


def kill_when(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    within_s: float,
    what: str,
    poll_s: float = 0.1,
    grace_s: float = 0.0,
) -> None:
    """SIGKILL a process group started with `start_new_session=True` `grace_s` after
    `ready()` holds; fail with its stderr if it dies first, or with `what` if it never
    gets there."""
    deadline = time.time() + within_s
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        assert time.time() < deadline, f"{what} within {within_s:.0f} s"
        time.sleep(poll_s)
    time.sleep(grace_s)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def chromium_or_skip() -> str:
    """Debian's chromium for the browser tests: skipped here without it, a failure in CI."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("Debian's chromium is not installed here")
    return chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mlflow_server(root: Path, port: int) -> subprocess.Popen[bytes]:
    """A real MLflow tracking server on loopback (the slim `mlflow ui`, one worker), ready.

    Its store lives under `root`, so a server started again on the same root and port is
    the same server, back from a crash.
    """
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("a")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
        start_new_session=True,  # the server and its workers, killable as one group
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError((root / "server.log").read_text()[-2000:])
        time.sleep(0.5)


def stop_mlflow_server(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop the server's whole process group (SIGKILL: as a crash would)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on loopback, shared by the session."""
    port = free_port()
    proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"), port)
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(proc)
