"""Shared fixtures: offline hub, one session-scoped local Ray, one tiny feature cache."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the whole session, so extraction happens once."""
    return tmp_path_factory.mktemp("fuss_cache")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray shared by every test that needs one (starting Ray costs seconds)."""
    import ray

    ray.init(
        address="local",  # a fresh instance, even if a `ray start` cluster runs here
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on loopback (the slim `mlflow ui`, one worker)."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("w")
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
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError((root / "server.log").read_text()[-2000:])
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
