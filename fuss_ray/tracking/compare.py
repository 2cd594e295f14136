"""`fuss-ray compare`: strategies x settings, mean ± std over seeds, from MLflow runs."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from fuss_ray.errors import UserError
from fuss_ray.tracking.plots import save_png

GROUP_TAGS = ("strategy", "partition", "alpha")


def collect(uri: str, experiment: str) -> dict[tuple[str, str, str], list[float]]:
    """Final mIoU of every finished simulation run, grouped by strategy and setting."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(experiment)
    except Exception as exc:
        raise UserError(
            f"--tracking-uri: cannot reach {uri} ({str(exc).splitlines()[0][:120]})"
        ) from None
    if exp is None:
        raise UserError(f"--experiment: no experiment named '{experiment}' at {uri}")
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    seen: set[tuple[str, ...]] = set()  # a re-run of the same seed replaces the older one
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            "attributes.status = 'FINISHED'",
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        for run in page:
            tags, metrics = run.data.tags, run.data.metrics
            if "final_miou" not in metrics or tags.get("strategy") in (None, "search", "study"):
                continue
            key = tuple(tags.get(t, "?") for t in GROUP_TAGS)
            if (*key, tags.get("seed", "?")) in seen:
                continue
            seen.add((*key, tags.get("seed", "?")))
            groups[key].append(float(metrics["final_miou"]))  # type: ignore[index]
        token = page.token
        if not token:
            break
    if not groups:
        raise UserError(f"--experiment: '{experiment}' has no finished fuss-ray runs")
    return dict(groups)


def table_rows(groups: dict[tuple[str, str, str], list[float]]) -> list[dict[str, Any]]:
    rows = []
    for (strategy, partition, alpha), values in sorted(groups.items()):
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(
            {
                "strategy": strategy,
                "partition": partition,
                "alpha": alpha,
                "mean": statistics.mean(values),
                "std": sd,
                "runs": len(values),
            }
        )
    return rows


def comparison_plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Grouped bars: one group per setting, one bar per strategy, error bars = std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = sorted({(r["partition"], r["alpha"]) for r in rows})
    strategies = sorted({r["strategy"] for r in rows})
    width = 0.8 / max(1, len(strategies))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings) * max(1, len(strategies)) / 3), 4))
    for i, s in enumerate(strategies):
        means, stds = [], []
        for setting in settings:
            hit = [
                r for r in rows if r["strategy"] == s and (r["partition"], r["alpha"]) == setting
            ]
            means.append(hit[0]["mean"] if hit else np.nan)
            stds.append(hit[0]["std"] if hit else 0.0)
        xs = np.arange(len(settings)) + (i - (len(strategies) - 1) / 2) * width
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=s)
    ax.set_xticks(np.arange(len(settings)), [f"{p}\nalpha={a}" for p, a in settings])
    ax.set_ylabel("final mIoU (mean ± std over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    save_png(fig, path, dpi=100)
