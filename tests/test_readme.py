"""Every command of the README's "Using it" section, run as written from a fresh copy.

The repository is copied (tracked and untracked-but-not-ignored files, as a fresh clone
would hold them) to a temporary folder; each command runs there through bash, after the
README's own `. .venv/bin/activate`, with relative paths exactly as printed. The only
change is appended `--set` overrides that shrink sizes (images, clients, rounds, trials),
so that the section runs in minutes. A command added to the README later is picked up
here; one whose subcommand has no shrink rule fails the test until it gets one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.fake_trees import make_cityscapes

from .conftest import kill_when

ROOT = Path(__file__).resolve().parents[1]
ACTIVATE = ". .venv/bin/activate"

# Smaller, not different: the quickstart's own settings with fewer and smaller images
# (112 px scenes and backbone input: 14 x 14 feature maps), fewer clients, rounds.
SHRINK_DATA = [
    "data.num_images=40",
    "data.num_eval_images=8",
    "data.image_size=112",
    "features.input_size=112",
    "partition.num_clients=4",
]
SHRINK_RUN = [*SHRINK_DATA, "train.rounds=2", "train.local_steps=2"]
SHRINK = {
    "run": SHRINK_RUN,
    "partition": SHRINK_DATA,
    "extract": SHRINK_DATA,
    "tune": [*SHRINK_RUN, "search.num_samples=2"],
    "study": [*SHRINK_RUN, "study.seeds=[0,1]", "study.grid={partition.alpha: [0.1]}"],
    "compare": [],
    "resume": [],  # continues the killed run with the config it started with
    "dry-run": [],  # reads a fake tree, trains nothing
}


def readme_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The command lines of the "Using it" section's code block, comments removed."""
    section = readme.read_text().split("\n## Using it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README: 'Using it' has no bash block"
    lines = [shlex.join(shlex.split(line, comments=True)) for line in block[1].splitlines()]
    return [line for line in lines if line]


def kind(command: str) -> str:
    """Which shrink rule applies: the subcommand, or resume/dry-run for those run modes."""
    words = shlex.split(command)
    if words[0] != "fuss-ray":
        return words[0]
    if "--resume" in words and words[1] == "run":
        return "resume"
    if "--dry-run" in words:
        return "dry-run"
    return words[1]


def fresh_copy(dest: Path) -> Path:
    """What a clone of this working tree holds, plus this test's own environment as .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree, not yet committed
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)  # keeps mtimes, so make sees .venv as up to date
    (dest / ".venv").symlink_to(Path(sys.prefix))
    return dest


def _env(home: Path, ray_join: dict[str, str] | None = None) -> dict[str, str]:
    """A user's shell: no tracking URI; no Ray address unless `ray_join` is given (a
    command then joins the tests' Ray instead of starting its own, as on a cluster)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update({"HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(ray_join or {})
    env.pop("VIRTUAL_ENV", None)
    return env


def shell(command: str, cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run one README line in bash, from `cwd`, after activating the README's venv."""
    proc = subprocess.Popen(
        ["bash", "-c", f"{ACTIVATE} && {command}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s: {command}\n{out[-3000:]}") from None
    assert proc.returncode == 0, f"exit {proc.returncode}: {command}\n{out[-3000:]}"
    return out


def shrunk(command: str) -> str:
    rule = kind(command)
    assert rule in SHRINK, f"README command '{command}': give test_readme.py a shrink rule"
    return " ".join([command, *(f"--set {shlex.quote(s)}" for s in SHRINK[rule])])


def kill_a_run(cwd: Path, env: dict[str, str], out: str) -> None:
    """Start the quickstart, SIGKILL it (and its own local Ray) after its first checkpoint."""
    shutil.rmtree(cwd / out, ignore_errors=True)  # the earlier commands' finished run
    # Two rounds of 30 steps: long enough that the kill lands after the first checkpoint
    # and before the end, short enough that the resumed run has one round left to train.
    sets = " ".join(f"--set {s}" for s in [*SHRINK_DATA, "train.rounds=2", "train.local_steps=30"])
    proc = subprocess.Popen(
        ["bash", "-c", f"{ACTIVATE} && exec fuss-ray run configs/quickstart.yaml {sets} --quiet"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    latest = cwd / out / "checkpoints" / "LATEST"
    kill_when(proc, latest.exists, 600, "no checkpoint")
    assert not (cwd / out / "summary.json").exists()


def test_readme_lists_the_commands_the_issue_names() -> None:
    kinds = {kind(c) for c in readme_commands()}
    assert {"run", "partition", "extract", "resume", "dry-run", "tune", "study", "compare"} <= kinds
    assert readme_commands()[0] == ACTIVATE


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path: Path, ray_join: dict[str, str]) -> None:
    repo = fresh_copy(tmp_path / "fuss-ray")
    home = tmp_path / "home"
    home.mkdir()
    own_ray = _env(home)
    seen: list[str] = []
    for command in readme_commands():
        if command == ACTIVATE:
            continue  # every command below runs after it
        rule = kind(command)
        # The first run starts its own local Ray, as a new user's does; the rest join the
        # tests' Ray (Ray's own start costs more than these shrunk runs train).
        env = own_ray if not seen else _env(home, ray_join)
        if rule == "dry-run":  # the preset's relative data and weights paths, faked
            make_cityscapes(repo / "data" / "cityscapes")
            (repo / "weights").mkdir(exist_ok=True)
            (repo / "weights" / "dino_vitbase8_pretrain.pth").write_bytes(b"a dry run checks")
        if rule == "resume":
            kill_a_run(repo, env, shlex.split(command)[shlex.split(command).index("--resume") + 1])
        out = shell(shrunk(command), repo, env, timeout=900)
        seen.append(rule)
        if rule == "run":
            final = json.loads(out.strip().splitlines()[-1])
            assert 0.0 <= final["final"]["miou"] <= 100.0
        if rule == "resume":
            summary = json.loads((repo / "runs/quickstart/summary.json").read_text())
            assert summary["resumed_from_round"] == 1 and len(summary["rounds"]) == 2
        if rule == "dry-run":
            assert "3 clients; images per client" in out
        if rule == "tune":
            result = json.loads(out.strip().splitlines()[-1])
            assert result["trials"] == 2 and result["errored"] == 0, out[-3000:]
            best = Path(result["best_config"])
            assert best.is_file()
            # The best config is ready for `fuss-ray run`: validate it there, from the copy.
            rel = best.relative_to(repo)
            shell(f"fuss-ray run {rel} --dry-run", repo, env, timeout=300)
        if rule == "study":
            result = json.loads(out.strip().splitlines()[-1])
            # Every strategy of the demo, one of its settings, two seeds.
            assert result["runs"] == 3 * 1 * 2 and result["failed"] == 0, out[-3000:]
            assert "Paired differences" in Path(result["report"]).read_text()
        if rule == "compare":
            assert "fedprox" in out and "ot-match" in out and (repo / "runs").is_dir()
    assert "tune" in seen and "resume" in seen


def readme_python(readme: Path = ROOT / "README.md") -> str:
    """The "From Python" section's code blocks, in order, as one script."""
    section = readme.read_text().split("\n## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README: 'From Python' has no python block"
    return "\n".join(blocks)


# The snippet runs as written, from a fresh copy; only `load_config` gets the same shrink
# overrides the commands get, after the snippet's own.
PYTHON_PRELUDE = """
import fuss_ray, fuss_ray.api
_load = fuss_ray.api.load_config
def _shrunk(source, overrides=None):
    config = _load(source, overrides)
    return _load(config, {SETS!r})
fuss_ray.api.load_config = _shrunk
"""
# After the snippet: the strategy it defines is registered, under its own settings.
PYTHON_POSTLUDE = """
from fuss_ray.plugins import STRATEGIES
print("registered", STRATEGIES["half-step"].Params.model_validate({"name": "half-step"}).name)
"""


@pytest.mark.slow
def test_the_readme_python_snippet_runs_as_written(
    tmp_path: Path, ray_join: dict[str, str]
) -> None:
    repo = fresh_copy(tmp_path / "fuss-ray")
    home = tmp_path / "home"
    home.mkdir()
    prelude = PYTHON_PRELUDE.replace("{SETS!r}", repr(SHRINK_RUN))
    (tmp_path / "snippet.py").write_text(prelude + readme_python() + PYTHON_POSTLUDE)
    out = shell(f"python {tmp_path / 'snippet.py'}", repo, _env(home, ray_join), timeout=900)
    lines = out.strip().splitlines()
    assert lines[-1] == "registered half-step"
    reported = [line.split()[0] for line in lines[:-2] if re.fullmatch(r"\d+ \S+", line)]
    assert reported == ["1", "2"]  # on_round, once per round, between progress lines
    miou, rounds = lines[-2].split()
    assert 0.0 <= float(miou) <= 100.0 and rounds == "2"
    assert (repo / "runs/from-python/summary.json").is_file()
