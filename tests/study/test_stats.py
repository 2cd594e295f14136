"""The statistics of a study, on numbers worked out by hand."""

import pytest

from fuss_ray.study.stats import (
    bootstrap_interval,
    cells_and_comparisons,
    design_warning,
    holm,
    ratio_interval,
    seeds_needed,
    smallest_adjusted_p,
    summarise,
    verdict,
    wilcoxon_p,
)


def test_wilcoxon_on_eight_wins_is_the_exact_two_sided_tail() -> None:
    # All eight differences positive: P(W = max) = 1 / 2^8, doubled for two sides.
    assert wilcoxon_p([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(2 / 256)
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0  # nothing to rank: no evidence
    assert wilcoxon_p([]) is None


def test_a_design_that_cannot_call_a_difference_is_named() -> None:
    # 8 seeds: 2 / 256 at best; times 8 comparisons = 0.0625, above 0.05. 9 seeds: 0.03125.
    assert smallest_adjusted_p(8, 8) == pytest.approx(0.0625)
    assert smallest_adjusted_p(9, 8) == pytest.approx(0.03125)
    assert smallest_adjusted_p(8, 1) == pytest.approx(2 / 256)
    assert seeds_needed(8) == 9 and seeds_needed(2) == 7 and seeds_needed(1) == 6
    warning = design_warning(8, 8)
    assert warning is not None and "0.0625" in warning and "9 seeds can" in warning
    assert design_warning(9, 8) is None and design_warning(3, 0) is None
    # The bound is what the test gives: eight wins, adjusted over eight comparisons.
    assert holm([wilcoxon_p(range(1, 9))] * 8)[0] == pytest.approx(0.0625)


def test_holm_steps_down_and_stays_monotone() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(., 2 x 0.03), max(., 1 x 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]


def test_bootstrap_interval_of_the_mean() -> None:
    low, high = bootstrap_interval([10.0, 12.0, 14.0, 16.0], seed=0)
    assert low is not None and high is not None
    assert 10.0 <= low < 13.0 < high <= 16.0  # brackets the mean, within the data's range
    assert bootstrap_interval([10.0, 12.0, 14.0, 16.0], seed=0) == (low, high)  # seeded
    assert bootstrap_interval([3.0, 3.0], seed=0) == (3.0, 3.0)
    assert bootstrap_interval([3.0], seed=0) == (None, None)
    s = summarise([1.0, 2.0, 3.0], seed=0)
    assert (s["n"], s["mean"], s["std"]) == (3, 2.0, 1.0)


def test_pairs_are_by_seed_within_a_setting() -> None:
    runs = []
    for seed, (a, b) in enumerate([(50, 40), (52, 45), (49, 47), (60, 50)]):
        for strategy, value in (("fedavg", b), ("mine", a)):
            runs.append(
                {"strategy": strategy, "setting": {"alpha": 0.1}, "seed": seed, "test_miou": value}
            )
    runs.append({"strategy": "mine", "setting": {"alpha": 1.0}, "seed": 0, "test_miou": 1.0})
    cells, comparisons = cells_and_comparisons(runs, "fedavg", seed=0)
    mine = next(c for c in cells if c["strategy"] == "mine" and c["setting"] == {"alpha": 0.1})
    assert (mine["n"], mine["mean"]) == (4, pytest.approx(52.75))
    (row,) = [c for c in comparisons if c["setting"] == {"alpha": 0.1}]
    assert row["n"] == 4 and row["mean_diff"] == pytest.approx((10 + 7 + 2 + 10) / 4)
    assert (row["wins"], row["losses"]) == (4, 0)
    assert row["wilcoxon_p"] == pytest.approx(2 / 16)  # four of four: 2 x 1/16
    assert row["verdict"] == "no significant difference"  # 0.125 is no evidence
    lonely = [c for c in comparisons if c["setting"] == {"alpha": 1.0}]
    assert lonely[0]["n"] == 0 and lonely[0]["verdict"] == "no significant difference"
    assert verdict({"n": 8, "mean_diff": -2.0, "wilcoxon_p_holm": 0.01}) == (
        "worse than the baseline"
    )


def test_a_curve_that_still_climbs_more_than_seeds_disagree_has_not_plateaued() -> None:
    from fuss_ray.study.stats import plateau

    # 8 rounds: the last quarter runs from round 6 to round 8 (index 5 to 7).
    climbing = [[10, 20, 30, 40, 50, 60, 70, 80], [12, 22, 32, 42, 52, 62, 72, 82]]
    out = plateau(climbing)
    assert out["from_round"] == 6
    assert out["gain_last_quarter"] == 20.0  # 80 - 60 on both seeds
    assert out["seed_spread"] == pytest.approx(2**0.5)  # std of 80 and 82, ddof 1
    assert out["plateaued"] is False
    flat = [[10, 40, 50, 55, 56, 56, 57, 56], [10, 30, 45, 50, 53, 55, 55, 58]]
    out = plateau(flat)
    assert out["gain_last_quarter"] == pytest.approx(((56 - 56) + (58 - 55)) / 2)
    assert out["seed_spread"] == pytest.approx(2**0.5)
    assert out["plateaued"] is False  # 1.5 > 1.41: still gaining a little more than spread
    out = plateau([[10, 40, 50, 55, 56, 56, 57, 56], [10, 30, 45, 50, 53, 55, 55, 60]])
    assert out["plateaued"] is True  # gain 2.5 <= spread std(56, 60) = 2.83
    # Two rounds: the quarter is the last step.
    assert plateau([[1.0, 5.0]])["plateaued"] is False
    assert plateau([[5.0, 5.0]])["plateaued"] is True
    assert plateau([[5.0]])["plateaued"] is None
    assert plateau([[1.0, None]])["plateaued"] is None


def test_the_ratio_of_means_keeps_seeds_paired() -> None:
    """FUSS over centralised: the ratio of the means; its interval resamples seeds as
    pairs, so a seed that is hard for both moves both sides of the ratio together."""
    fuss = [30.0, 60.0, 45.0, 50.0]
    central = [40.0, 80.0, 60.0, 66.0]  # about 3/4 of it on every seed
    ratio, low, high = ratio_interval(fuss, central, seed=0)
    assert ratio == pytest.approx(185 / 246)  # mean 46.25 over mean 61.5
    assert low is not None and high is not None
    assert 0.74 < low <= ratio <= high < 0.77  # paired: tight, whatever the seeds' spread
    assert ratio_interval([1.0, 1.0], [2.0, 2.0], seed=0) == (0.5, 0.5, 0.5)
    assert ratio_interval([3.0], [4.0], seed=0) == (0.75, None, None)
    with pytest.raises(ValueError, match="paired"):
        ratio_interval([1.0, 2.0], [1.0], seed=0)
