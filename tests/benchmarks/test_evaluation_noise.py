"""benchmarks/evaluation_noise.py: the spread of one run's evaluations, and the spread a count of pictures has."""

import pytest
from benchmarks.evaluation_noise import binomial_spread, run_summary


def test_a_count_of_pictures_spreads_as_a_binomial_share():
    assert binomial_spread(0.8, 16) == pytest.approx(0.1)
    assert binomial_spread(1.0, 16) == 0.0


def test_a_run_summary_gives_each_score_mean_and_spread_and_counts_the_evaluations_at_the_targets():
    evaluations = [{"fidelity": 0.75, "editability": 0.75}, {"fidelity": 0.875, "editability": 0.75},
                   {"fidelity": 0.875, "editability": 0.625}, {"fidelity": 1.0, "editability": 0.75}]
    summary = run_summary(evaluations)
    assert summary["fidelity"] == pytest.approx((0.875, 0.10206), abs=1e-5)
    assert summary["editability"] == pytest.approx((0.71875, 0.0625))
    assert summary["at_targets"] == 2  # 0.75 misses fidelity, 0.625 editability
