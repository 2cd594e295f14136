"""examples/quickstart.ipynb, executed as a user would run it, from a fresh copy.

The notebook's "parameters" cell is the one change (as papermill makes it): the same
shrink overrides the README test appends to the quickstart, so that it runs in a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.test_readme import SHRINK_RUN, fresh_copy

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def _overrides() -> dict[str, object]:
    return {k: json.loads(v) for k, v in (item.split("=", 1) for item in SHRINK_RUN)}


def test_the_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert [c for c in code if "parameters" in c.metadata.get("tags", [])]


@pytest.mark.slow
def test_the_notebook_runs_two_strategies_and_one_of_its_own_on_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_join: dict[str, str]
) -> None:
    repo = fresh_copy(tmp_path / "fuss-ray")
    for key in ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV"):
        monkeypatch.delenv(key, raising=False)
    for key, value in ray_join.items():  # the kernel joins the tests' Ray
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = repo / "examples" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += f"\nOVERRIDES = {_overrides()!r}\n"
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "fedavg: test mIoU" in text and "fuss-maximin: test mIoU" in text
    assert "half-step: test mIoU" in text and "Ray actor(s)" in text
    assert "#/compare-runs?runs=" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the curves, inline
    for name in ("fedavg", "fuss-maximin", "half-step"):  # written where the notebook says
        summary = json.loads((repo / "runs/notebook" / name / "summary.json").read_text())
        assert summary["strategy"] == name and len(summary["rounds"]) == 2
    on_ray = json.loads((repo / "runs/notebook/half-step/summary.json").read_text())
    assert len(on_ray["actors_at_start"]) >= 1  # the class reached Ray actors
