"""Static checks of docker/: the files parse, and agree on images, ports and volumes.

Docker cannot build or run on the development machines, so these checks hold what can be
held without it (see docker/README.md for what was and was not verified).
"""

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
PYPROJECT = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
RAY = next(
    re.sub(r"^ray\[default\]==", "", d)
    for d in PYPROJECT["project"]["dependencies"]
    if d.startswith("ray[")
)
TORCH = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch=="))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_dockerfiles_build_on_the_pinned_ray_and_torch() -> None:
    for name, flavour in (("Dockerfile.cpu", "cpu"), ("Dockerfile.cuda", "gpu")):
        text = (DOCKER / name).read_text()
        assert f"ARG RAY_VERSION={RAY}\n" in text, name
        assert f"FROM rayproject/ray:${{RAY_VERSION}}-py311-{flavour}\n" in text, name
        assert TORCH in text and "COPY --chown=ray:users fuss_ray ./fuss_ray" in text


def test_compose_services_agree_on_images_ports_and_volumes() -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "ray-head", "ray-worker", "driver"}
    fuss = {"mlflow", "ray-head", "ray-worker", "driver"}
    assert {services[s]["image"] for s in fuss} == {f"fuss-ray:{VERSION}-cpu"}
    assert services["ray-head"]["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    declared = set(compose["volumes"])
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            assert mount.split(":")[0] in declared, (name, mount)
    for name in ("postgres", "mlflow", "ray-head"):
        assert services[name]["healthcheck"]["test"], name

    head_port = re.search(r"--port=(\d+)", services["ray-head"]["command"])
    assert head_port is not None
    assert f"{head_port[1]}:{head_port[1]}" in services["ray-head"]["ports"]
    assert "8265:8265" in services["ray-head"]["ports"]
    assert f"--address=ray-head:{head_port[1]}" in services["ray-worker"]["command"]
    assert services["driver"]["environment"]["RAY_ADDRESS"] == f"ray-head:{head_port[1]}"

    mlflow_port = re.search(r"--port (\d+)", services["mlflow"]["command"])
    assert (
        mlflow_port is not None
        and f"{mlflow_port[1]}:{mlflow_port[1]}" in (services["mlflow"]["ports"])
    )
    uri = services["driver"]["environment"]["MLFLOW_TRACKING_URI"]
    assert uri == f"http://mlflow:{mlflow_port[1]}"
    assert "postgresql://mlflow:" in services["mlflow"]["command"]
    assert "@postgres:5432/mlflow" in services["mlflow"]["command"]
    assert "/mlartifacts" in services["mlflow"]["command"]
    assert "mlartifacts:/mlartifacts" in services["mlflow"]["volumes"]
    assert services["ray-worker"]["deploy"]["replicas"] == "${RAY_WORKERS:-2}"
    # The driver waits for the cluster and the tracking server to be healthy.
    needs = services["driver"]["depends_on"]
    assert needs["ray-head"]["condition"] == needs["mlflow"]["condition"] == "service_healthy"
    # Every node and the driver share the feature cache and run folders.
    assert "--set features.cache_dir=/data/" in services["driver"]["command"]
    for s in ("ray-head", "ray-worker", "driver"):
        assert "shared:/data" in services[s]["volumes"]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _check_ray_cluster_spec(spec: dict[str, Any]) -> None:
    assert spec["rayVersion"] == RAY
    containers = _containers(spec)
    assert {c["image"] for c in containers} == {f"fuss-ray:{VERSION}-cuda"}
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    gpu = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu-workers"]
    assert len(gpu) == 1
    limits = gpu[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == int(gpu[0]["rayStartParams"]["num-gpus"]) >= 1
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            for m in c["volumeMounts"]:
                claim = volumes[m["name"]]["persistentVolumeClaim"]["claimName"]
                assert claim == "fuss-ray-shared" and m["mountPath"] == "/data"
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_kuberay_cluster_and_job() -> None:
    cluster, claim = _docs(DOCKER / "kuberay" / "raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["metadata"]["name"] == "fuss-ray-shared"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    _check_ray_cluster_spec(cluster["spec"])
    (job,) = _docs(DOCKER / "kuberay" / "rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["entrypoint"].startswith("fuss-ray run configs/")
    config = job["spec"]["entrypoint"].split()[2]
    assert (DOCKER.parent / config).is_file()
    _check_ray_cluster_spec(job["spec"]["rayClusterSpec"])


def test_cluster_launcher_yaml() -> None:
    cfg = yaml.safe_load((DOCKER / "cluster-aws.yaml").read_text())
    assert cfg["docker"]["image"] == f"fuss-ray:{VERSION}-cuda"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
    for t in types.values():
        assert t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]
    assert any("--port=6379" in c for c in cfg["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])
    assert any(":/data" in o for o in cfg["docker"]["run_options"])
