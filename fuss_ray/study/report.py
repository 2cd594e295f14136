"""A study's report: `report.md` with its tables, and the PNG figures it shows.

Everything here is drawn from `study.json` alone, so a committed study can be redrawn
(`fuss-ray study --report DIR`) without running anything.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from fuss_ray.io import atomic_path
from fuss_ray.study.stats import ALPHA, setting_key
from fuss_ray.tracking.plots import save_png


def _num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def _interval(row: dict[str, Any]) -> str:
    if row.get("ci_low") is None:
        return ""
    return f" [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"


def cell_of(study: dict[str, Any], strategy: str, key: str) -> dict[str, Any] | None:
    """The cell row of one strategy in one setting (by its setting key)."""
    return next(
        (
            c
            for c in study["cells"]
            if c["strategy"] == strategy and setting_key(c["setting"]) == key
        ),
        None,
    )


def factor_plot(study: dict[str, Any], factor: str, path: Path) -> None:
    """Test mIoU against one grid factor, one line per strategy, its 95% interval a band.

    With several factors, one panel per combination of the others.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid: dict[str, list[Any]] = study["grid"]
    others = [k for k in grid if k != factor]
    panels = [
        dict(zip(others, c, strict=True)) for c in itertools.product(*(grid[k] for k in others))
    ]
    values = grid[factor]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, fixed in zip(axes[0], panels, strict=True):
        xs = np.arange(len(values))
        for i, strategy in enumerate(study["strategies"]):
            mean, low, high = [], [], []
            for v in values:
                row = cell_of(study, strategy, setting_key({**fixed, factor: v}))
                mean.append(np.nan if row is None else row["mean"])
                low.append(np.nan if row is None or row["ci_low"] is None else row["ci_low"])
                high.append(np.nan if row is None or row["ci_high"] is None else row["ci_high"])
            offset = (i - (len(study["strategies"]) - 1) / 2) * 0.04
            line = ax.plot(xs + offset, mean, marker="o", label=strategy)[0]
            ax.fill_between(xs + offset, low, high, color=line.get_color(), alpha=0.15)
        ax.set_xticks(xs, [str(v) for v in values])
        ax.set_xlabel(factor)
        ax.set_ylabel("test mIoU (mean, 95% bootstrap interval)")
        ax.set_title(
            setting_key(fixed) if fixed else f"{study['name']}: n = {len(study['seeds'])} seeds"
        )
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    save_png(fig, path, dpi=110)


def differences_plot(study: dict[str, Any], path: Path) -> None:
    """Each strategy's mean paired difference to the baseline, with its interval, per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = study["comparisons"]
    keys = sorted({setting_key(r["setting"]) for r in rows})
    fig, axes = plt.subplots(
        1, len(keys), figsize=(5 * len(keys), 0.5 * len(study["strategies"]) + 1.8), squeeze=False
    )
    for ax, key in zip(axes[0], keys, strict=True):
        mine = [r for r in rows if setting_key(r["setting"]) == key]
        ys = np.arange(len(mine))
        for y, r in zip(ys, mine, strict=True):
            significant = r.get("wilcoxon_p_holm") is not None and r["wilcoxon_p_holm"] < ALPHA
            colour = ("tab:green" if r["mean_diff"] > 0 else "tab:red") if significant else "grey"
            low = r["ci_low"] if r["ci_low"] is not None else r["mean_diff"]
            high = r["ci_high"] if r["ci_high"] is not None else r["mean_diff"]
            ax.errorbar(
                r["mean_diff"],
                y,
                xerr=[[r["mean_diff"] - low], [high - r["mean_diff"]]],
                fmt="o",
                color=colour,
                capsize=3,
            )
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [r["strategy"] for r in mine])
        ax.set_xlabel(f"test mIoU minus {study['baseline']} (same seed)")
        ax.set_title(key, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("paired differences, 95% bootstrap intervals (colour: Holm p < 0.05)", fontsize=9)
    save_png(fig, path, dpi=110)


def _setting_keys(study: dict[str, Any]) -> list[str]:
    return sorted({setting_key(c["setting"]) for c in study["cells"]})


def cells_plot(study: dict[str, Any], path: Path) -> None:
    """One panel per setting: each strategy a labelled row, its mean and 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, strategies = _setting_keys(study), list(study["strategies"])
    labels = 0.075 * max(len(s) for s in strategies)  # inches the row labels take
    fig, axes = plt.subplots(
        1, len(keys), figsize=(3.4 * len(keys) + labels + 0.6, 0.42 * len(strategies) + 1.6),
        squeeze=False, sharey=True,
    )  # fmt: skip
    ys = np.arange(len(strategies))[::-1]
    for ax, key in zip(axes[0], keys, strict=True):
        for y, strategy in zip(ys, strategies, strict=True):
            row = cell_of(study, strategy, key)
            if row is None:
                continue
            low = row["ci_low"] if row["ci_low"] is not None else row["mean"]
            high = row["ci_high"] if row["ci_high"] is not None else row["mean"]
            colour = "tab:blue" if strategy != study.get("baseline") else "black"
            ax.errorbar(
                row["mean"], y, xerr=[[row["mean"] - low], [high - row["mean"]]], fmt="o",
                color=colour, capsize=3,
            )  # fmt: skip
        ax.set_yticks(ys, strategies)
        ax.set_xlabel("test mIoU (mean, 95% interval)")
        ax.set_title(key, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{study['name']}: n = {len(study['seeds'])} seeds", fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def has_curves(study: dict[str, Any]) -> bool:
    return any(r.get("val_curve") for r in study["runs"])


def curves_plot(study: dict[str, Any], path: Path) -> None:
    """Validation mIoU against rounds (top) and against client steps (bottom), one panel
    per setting, one line per strategy (mean over seeds, band: +/- one std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _setting_keys(study)
    fig, axes = plt.subplots(2, len(keys), figsize=(4.6 * len(keys) + 1.4, 7.4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for col, key in enumerate(keys):
        for i, strategy in enumerate(study["strategies"]):
            runs = [
                r
                for r in study["runs"]
                if r["strategy"] == strategy and setting_key(r["setting"]) == key
                and r.get("val_curve") and all(v is not None for v in r["val_curve"])
            ]  # fmt: skip
            if not runs:
                continue
            rounds = min(len(r["val_curve"]) for r in runs)
            ys = np.array([r["val_curve"][:rounds] for r in runs], dtype=float)
            mean, std = ys.mean(axis=0), ys.std(axis=0)
            per_round = np.mean(
                [(r.get("budget") or {}).get("client_steps_total", 0) / rounds for r in runs]
            )
            xs = np.arange(1, rounds + 1)
            for row, x in ((0, xs), (1, xs * per_round)):
                ax = axes[row][col]
                ax.plot(x, mean, color=colours(i % 10), label=strategy, linewidth=1.4)
                ax.fill_between(x, mean - std, mean + std, color=colours(i % 10), alpha=0.12)
        axes[0][col].set_title(key, fontsize=9)
        axes[0][col].set_xlabel("round")
        axes[1][col].set_xlabel("client steps (all clients)")
        for row in (0, 1):
            axes[row][col].set_ylabel("validation mIoU")
            axes[row][col].grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle("learning curves: mean over seeds, band +/- 1 std", fontsize=10)
    # The legend below the panels, in full: beside one narrow column it was cut off.
    columns = min(len(labels), 4)
    bottom = 0.02 + 0.03 * -(-len(labels) // columns)
    fig.tight_layout(rect=(0, bottom + 0.02, 1, 0.96))
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    save_png(fig, path, dpi=110, layout=False)


def plateau_lines(study: dict[str, Any]) -> list[str]:
    """The cells whose validation curves still climb (see `stats.plateau` for the rule)."""
    rows = [c for c in study["cells"] if (c.get("plateau") or {}).get("plateaued") is not None]
    if not rows:
        return []
    climbing = [c for c in rows if not c["plateau"]["plateaued"]]
    lines = [
        "",
        "## Learning curves",
        "",
        "A cell has plateaued when its mean validation gain over the last quarter of the "
        "rounds is at most the seed spread (the standard deviation of the final validation "
        f"mIoU over seeds). {len(rows) - len(climbing)} of {len(rows)} cells have plateaued.",
    ]
    if climbing:
        lines += [
            "",
            "Still climbing (a longer budget could change their ranking):",
            "",
            "| setting | strategy | gain over the last quarter | seed spread |",
            "|---|---|---|---|",
        ]
        for c in climbing:
            p = c["plateau"]
            lines.append(
                f"| {setting_key(c['setting'])} | {c['strategy']} | "
                f"{p['gain_last_quarter']:+.1f} (from round {p['from_round']}) | "
                f"{p['seed_spread']:.1f} |"
            )
    return lines


def write_report(study: dict[str, Any], folder: Path) -> list[Path]:
    """report.md and its figures in `folder`; returns the files written."""
    files = []
    figures = []
    for factor in study["grid"]:
        path = folder / f"miou-vs-{factor}.png"
        factor_plot(study, factor, path)
        files.append(path)
        figures.append((f"Test mIoU against {factor}", path.name))
    if not study["grid"]:  # explicit settings: one axis, one point per setting
        path = folder / "miou.png"
        cells_plot(study, path)
        files.append(path)
        figures.append(("Test mIoU per setting", path.name))
    if has_curves(study):
        path = folder / "learning-curves.png"
        curves_plot(study, path)
        files.append(path)
        figures.append(("Validation mIoU against rounds and client steps", path.name))
    if study["comparisons"]:
        path = folder / "paired-differences.png"
        differences_plot(study, path)
        files.append(path)
        figures.append((f"Paired differences to {study['baseline']}", path.name))
    report = folder / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text(report_markdown(study, figures))
    return [report, *files]


def cells_table(study: dict[str, Any], keys: list[str], with_n: bool = True) -> list[str]:
    """A markdown table: one row per strategy, one column per setting, mean [CI](, n)."""
    lines = ["| strategy | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for strategy in study["strategies"]:
        cells = []
        for key in keys:
            row = cell_of(study, strategy, key)
            n = f", n={row['n']}" if row is not None and with_n else ""
            cells.append("–" if row is None else f"{_num(row['mean'])}{_interval(row)}{n}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def _design_lines(study: dict[str, Any]) -> list[str]:
    """Say so when the study has too few seeds for any verdict but 'no significant
    difference' (the intervals still show the effects' sizes)."""
    smallest = study.get("smallest_possible_holm_p")
    if smallest is None or smallest < ALPHA:
        return []
    return [
        "",
        f"**This design cannot call a difference**: with {len(study['seeds'])} seeds the "
        f"smallest Holm-adjusted p-value it can produce is {smallest:.3g}, not below "
        f"{ALPHA}; the verdicts below say so by construction. Add seeds to call differences.",
    ]


def report_markdown(study: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    """The report's text: what ran, the cells, the paired comparisons, the figures."""
    keys = sorted({setting_key(c["setting"]) for c in study["cells"]})
    lines = [
        f"# Study `{study['name']}`",
        "",
        f"{len(study['strategies'])} strategies x {max(1, len(keys))} settings x "
        f"{len(study['seeds'])} seeds ({', '.join(map(str, study['seeds']))}); "
        f"{len(study['runs'])} runs finished"
        + (
            f", {len(study['failed'])} did not ({', '.join(study['failed'][:5])})"
            if study["failed"]
            else ""
        )
        + ". Runs are paired: within a setting, one seed gives every strategy the same data, "
        "partition and initial model.",
        "",
        "Test mIoU is on the test split; tuning, where the study has it, selected on the "
        "validation split only"
        + (
            f" ({study['tune']['num_samples']} trials per strategy and setting)."
            if study.get("tune")
            else "."
        ),
        "",
        "## Test mIoU (mean [95% bootstrap interval of the mean], n)",
        "",
        *cells_table(study, keys),
    ]
    lines += [
        "",
        f"## Paired differences to `{study['baseline']}` (same seed, same setting)",
        "",
        "Mean of (strategy - baseline) test mIoU with its 95% bootstrap interval; the "
        "two-sided Wilcoxon signed-rank p-value on the paired differences, and that p-value "
        "Holm-adjusted over the comparisons of the setting; a difference is called only "
        f"when the adjusted p-value is below {ALPHA}.",
        *_design_lines(study),
        "",
        "| setting | strategy | n | mean difference [95% CI] | Wilcoxon p | Holm p "
        "| wins / losses | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in study["comparisons"]:
        lines.append(
            f"| {setting_key(r['setting'])} | {r['strategy']} | {r['n']} | "
            f"{r['mean_diff']:+.1f}{_interval(r)} | {_p(r['wilcoxon_p'])} | "
            f"{_p(r.get('wilcoxon_p_holm'))} | {r['wins']} / {r['losses']} | {r['verdict']} |"
        )
    lines += plateau_lines(study)
    for title, name in figures:
        lines += ["", f"![{title}]({name})"]
    return "\n".join(lines) + "\n"
