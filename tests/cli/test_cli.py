"""The command line: a working run, and one clear line for every user error."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fuss_ray.cli.main import main

from ..conftest import tiny_config_dict
from ..data.test_folder import make_tree


def _write(path: Path, cfg: dict) -> Path:  # type: ignore[type-arg]
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.ray
def test_run_on_ray_writes_summary(
    cache_dir: Path, tmp_path: Path, ray_session: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_config_dict(cache_dir, **{"federation.executor": "ray", "federation.num_cpus": 0.5})
    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                str(_write(tmp_path / "c.yaml", cfg)),
                "--out",
                str(out),
                "--quiet",
                "--set",
                "train.rounds=1",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_clients"] == 4 and len(summary["rounds"]) == 1
    assert json.loads(capsys.readouterr().out)["final"]["miou"] == summary["final"]["miou"]


def test_partition_and_extract_commands(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "c.yaml", tiny_config_dict(cache_dir))
    assert main(["partition", str(path), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert (tmp_path / "p" / "partition.parquet").is_file()
    assert main(["extract", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    # 32 scenes in 3 domains: one of each domain's ~10 is set aside for validation
    assert "train: 29 images" in out and "val: 3 images" in out and "eval: 8 images" in out


def _folder_cfg(cache_dir: Path, root: Path) -> dict:  # type: ignore[type-arg]
    return tiny_config_dict(
        cache_dir,
        **{
            "data.dataset": "folder",
            "data.root": str(root),
            "partition.num_clients": 2,
            "partition.kind": "iid",
        },
    )


def _bad_mask(root: Path) -> None:
    (root / "masks" / "a" / "0.png").unlink()


def _bad_size(root: Path) -> None:
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "b" / "1.png")


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("range", "partition.alpha"),
        ("missing-root", "does not exist"),
        ("no-mask", "no mask"),
        ("size", "differs from its image"),
        ("clients", "partition.num_clients"),
    ],
)
def test_user_errors_are_one_line(
    case: str, expect: str, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(tmp_path / "data", n=6)
    cfg = _folder_cfg(cache_dir, root)
    extra: list[str] = []
    if case == "range":
        extra = ["--set", "partition.alpha=-0.5"]
    elif case == "missing-root":
        cfg["data"]["root"] = str(tmp_path / "absent")
    elif case == "no-mask":
        _bad_mask(root)
    elif case == "size":
        _bad_size(root)
    elif case == "clients":
        extra = ["--set", "partition.num_clients=50"]
    out = tmp_path / "out"
    code = main(
        ["run", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(out), "--quiet", *extra]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("fuss-ray: error:") and expect in err[0]
    assert not out.exists()  # nothing written, not even half


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuss_ray.cli.main",
            "run",
            "configs/quickstart.yaml",
            "--set",
            "train.rounds=0",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "fuss-ray: error: configs/quickstart.yaml: train.rounds: Input should be greater than "
        "or equal to 1 (got 0)"
    )
