"""What `tools/gpu_check.py` needs on the device machine, gathered here in one folder.

The device machine has PyTorch, numpy, scipy, pyarrow and rich, but not pydantic, POT or
Ray, and nothing can be fetched there. Ray's wheel (79 MB) is over what travels (64 MiB),
so there the check's actors are processes; POT's (32 MB) would leave too little room for
the features, so the check skips `ot-match` there (its optimal transport runs on the CPU
anyway; its local training is FedAvg's). This writes, under `.gpu/` (ignored by git):

- `whl/`: Python 3.12 wheels of the packages fuss-ray imports that the machine lacks;
- `cache/train-*`: configs/benchmark.yaml's training features as float16 (about 32 MB),
  the real cached features the check times.

    python tools/gpu_bundle.py            # here, before the session's device call

and then, on the device machine (the `device` tool's run, carrying `.gpu`):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl \
      && PYTHONPATH=/tmp/site:. python3 tools/gpu_check.py \
         --features "$(ls -d .gpu/cache/train-*)" --json $OUT/gpu.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
# What fuss-ray imports that the device machine's image does not have (its package list
# is in the device tool's notes), at the versions this project is tested with.
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")


def wheels(folder: Path) -> None:
    from importlib.metadata import version

    folder.mkdir(parents=True, exist_ok=True)
    platforms = [f"manylinux_2_{n}_x86_64" for n in (17, 27, 28)] + ["manylinux2014_x86_64"]
    for name in WHEELS:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        cmd += ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
        cmd += [arg for p in platforms for arg in ("--platform", p)]
        subprocess.run([*cmd, "-d", str(folder), f"{name}=={version(name)}"], check=True)


def features(cache: Path) -> Path:
    from fuss_ray.config import load_config
    from fuss_ray.simulation import host_spec, prepare

    config = load_config(
        ROOT / "configs" / "benchmark.yaml",
        [f"features.cache_dir={cache}", "features.dtype=float16", "tracking=false"],
    )
    return Path(host_spec(config, prepare(config, show_progress=True)).store_path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    args = parser.parse_args()
    shutil.rmtree(args.out / "whl", ignore_errors=True)
    wheels(args.out / "whl")
    store = features(args.out / "cache")
    for other in (args.out / "cache").iterdir():  # only the training split travels
        if other.is_dir() and other != store:
            shutil.rmtree(other)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out}: {size / 2**20:.1f} MiB (features: {store.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
