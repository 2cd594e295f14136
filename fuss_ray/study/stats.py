"""The statistics of a study: intervals of cell means, paired differences, signed-rank tests.

Every strategy of a study runs on the same seeds in every setting, and a seed fixes the
data, the partition and the initial model, so strategies are compared in pairs: strategy
minus baseline, seed by seed. Reported per cell (strategy x setting): the mean test mIoU
over seeds with a 95% percentile-bootstrap interval of the mean; per comparison: the mean
paired difference with its bootstrap interval, the two-sided Wilcoxon signed-rank p-value
on the paired differences (scipy's defaults), Holm's adjustment of those p-values over the
comparisons of a setting, and the wins and losses. A difference counts as significant
only when the adjusted p-value is below 0.05; otherwise the verdict says "no significant
difference", whatever the means.

The bootstrap is seeded, so a study's numbers are reproducible from its runs alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 9999
ALPHA = 0.05


def bootstrap_interval(
    values: Sequence[float] | np.ndarray, seed: int
) -> tuple[float | None, float | None]:
    """The 95% percentile-bootstrap interval of the mean (None with fewer than 2 values)."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2:
        return None, None
    if np.all(data == data[0]):  # every resample has the same mean
        return float(data[0]), float(data[0])
    res = bootstrap(
        (data,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_interval(
    numerators: Sequence[float], denominators: Sequence[float], seed: int
) -> tuple[float, float | None, float | None]:
    """The ratio of two means over paired seeds, with its 95% percentile-bootstrap
    interval: seeds are resampled as pairs, so the ratio keeps their pairing (the paper
    reports FUSS as a share of centralised training's mIoU)."""
    from scipy.stats import bootstrap

    top = np.asarray(numerators, dtype=np.float64)
    bottom = np.asarray(denominators, dtype=np.float64)
    if len(top) != len(bottom) or not len(top):
        raise ValueError("ratio_interval: needs as many paired values on both sides")
    ratio = float(top.mean() / bottom.mean())
    if len(top) < 2:
        return ratio, None, None
    if np.all(top == top[0]) and np.all(bottom == bottom[0]):
        return ratio, ratio, ratio
    res = bootstrap(
        (top, bottom),
        lambda x, y, axis=-1: np.mean(x, axis=axis) / np.mean(y, axis=axis),
        paired=True,
        confidence_level=CONFIDENCE,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return ratio, float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy's defaults).

    1.0 when every difference is zero (nothing to rank), None with no pairs.
    """
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    if len(d) == 0:
        return None
    if np.all(d == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small samples: scipy warns, the p-value stands
        return float(wilcoxon(d).pvalue)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (familywise error over one setting's comparisons)."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    m = len(present)
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def smallest_adjusted_p(seeds: int, comparisons: int) -> float:
    """The smallest Holm-adjusted p-value one setting of a study can produce.

    With n paired seeds and no ties, the exact two-sided signed-rank test bottoms out at
    2 / 2^n (every difference of one sign), and Holm multiplies the smallest p-value by
    the number of comparisons. When this is not below ALPHA, the design cannot call any
    difference, however large: 8 seeds and 8 comparisons give 0.0625.
    """
    if seeds < 1 or comparisons < 1:
        return 1.0
    return min(1.0, comparisons * 2.0 / 2.0**seeds)


def seeds_needed(comparisons: int) -> int:
    """The fewest paired seeds with which `comparisons` comparisons can reach ALPHA."""
    seeds = 1
    while smallest_adjusted_p(seeds, comparisons) >= ALPHA:
        seeds += 1
    return seeds


def design_warning(seeds: int, comparisons: int) -> str | None:
    """One line for a study too small to call any difference (None when it can)."""
    smallest = smallest_adjusted_p(seeds, comparisons)
    if comparisons < 1 or smallest < ALPHA:
        return None
    return (
        f"study: with {seeds} seed(s) and {comparisons} comparison(s) per setting, no "
        f"difference can reach a Holm-adjusted p below {ALPHA} (the smallest possible is "
        f"{smallest:.3g}); {seeds_needed(comparisons)} seeds can"
    )


def summarise(values: Sequence[float], seed: int) -> dict[str, Any]:
    """n, mean, std (n - 1) and the bootstrap interval of the mean."""
    data = np.asarray(values, dtype=np.float64)
    low, high = bootstrap_interval(data, seed)
    return {
        "n": len(data),
        "mean": float(data.mean()) if len(data) else None,
        "std": float(data.std(ddof=1)) if len(data) > 1 else None,
        "ci_low": low,
        "ci_high": high,
    }


def verdict(row: dict[str, Any]) -> str:
    """A comparison in words, from its adjusted p-value and the sign of its difference."""
    p = row.get("wilcoxon_p_holm")
    if p is None or row["n"] < 2 or not p < ALPHA:
        return "no significant difference"
    return "better than the baseline" if row["mean_diff"] > 0 else "worse than the baseline"


def setting_key(setting: dict[str, Any]) -> str:
    """A setting as one stable string (for grouping and for names)."""
    return ", ".join(f"{k}={setting[k]}" for k in sorted(setting)) or "base"


def cells_and_comparisons(
    runs: list[dict[str, Any]], baseline: str, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From finished runs: one row per (strategy, setting), one per comparison with the
    baseline in each setting (paired by seed)."""
    groups: dict[tuple[str, str], dict[int, float]] = {}
    curves: dict[tuple[str, str], list[list[float | None]]] = {}
    settings: dict[str, dict[str, Any]] = {}
    for r in runs:
        key = setting_key(r["setting"])
        settings[key] = r["setting"]
        groups.setdefault((r["strategy"], key), {})[int(r["seed"])] = float(r["test_miou"])
        if r.get("val_curve"):
            curves.setdefault((r["strategy"], key), []).append(r["val_curve"])
    cells = []
    for (strategy, key), by_seed in sorted(groups.items()):
        cells.append(
            {
                "strategy": strategy,
                "setting": settings[key],
                **summarise([by_seed[s] for s in sorted(by_seed)], seed),
                "plateau": plateau(curves.get((strategy, key), [])),
            }
        )
    comparisons: list[dict[str, Any]] = []
    for key in sorted(settings):
        base = groups.get((baseline, key), {})
        rows: list[dict[str, Any]] = []
        for (strategy, k), by_seed in sorted(groups.items()):
            if k != key or strategy == baseline:
                continue
            seeds = sorted(set(by_seed) & set(base))
            diffs = [by_seed[s] - base[s] for s in seeds]
            low, high = bootstrap_interval(diffs, seed)
            rows.append(
                {
                    "strategy": strategy,
                    "baseline": baseline,
                    "setting": settings[key],
                    "n": len(diffs),
                    "mean_diff": float(np.mean(diffs)) if diffs else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "wilcoxon_p": wilcoxon_p(diffs),
                    "wins": sum(1 for d in diffs if d > 0),
                    "losses": sum(1 for d in diffs if d < 0),
                }
            )
        pvalues: list[float | None] = [r["wilcoxon_p"] for r in rows]
        for row, adjusted in zip(rows, holm(pvalues), strict=True):
            row["wilcoxon_p_holm"] = adjusted
            row["verdict"] = verdict(row)
        comparisons.extend(rows)
    return cells, comparisons


def plateau(curves: Sequence[Sequence[float | None]]) -> dict[str, Any]:
    """Whether a cell's learning curves (one per seed, a score per round) have levelled off.

    The rule: over the last quarter of training (from round ceil(3R/4) to round R, at
    least the last round's step), the mean gain across seeds must not exceed the seed
    spread (the standard deviation of the final scores over seeds). A cell that still
    gains more than seeds disagree would rank differently with a longer budget, so its
    comparison says more about the budget than about the strategies. Seeds whose curve
    has a missing value are left out; with one seed the spread is 0.
    """
    full = [np.asarray(c, dtype=float) for c in curves if c and all(v is not None for v in c)]
    if not full or len(full[0]) < 2:
        return {"plateaued": None, "gain_last_quarter": None, "seed_spread": None}
    rounds = min(len(c) for c in full)
    start = min(rounds - 2, math.ceil(0.75 * rounds) - 1)  # index of the quarter's start
    gains = [float(c[rounds - 1] - c[start]) for c in full]
    finals = [float(c[rounds - 1]) for c in full]
    gain = float(np.mean(gains))
    spread = float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0
    return {
        "plateaued": gain <= spread,
        "gain_last_quarter": gain,
        "seed_spread": spread,
        "from_round": start + 1,
    }
