"""Which checkpoint is a run's best (ganforge.selection): the latest one whose quick FID is
within TOLERANCE of the lowest before it."""

import math

from ganforge import selection


def test_tolerance_is_a_few_per_cent():
    # the figures below are written for 3 %; a change of the constant should be a decision
    assert selection.TOLERANCE == 0.03


def test_a_later_checkpoint_within_the_noise_becomes_the_best():
    # the 2026-11-30 Fashion-MNIST run: quick FID 74.0 at step 10,000, 74.8 at 14,065, where
    # 5,000 images scored the later one 20.4 and the earlier 22.1
    assert selection.best_step([(5000, 91.2), (10000, 74.0), (14065, 74.8)]) == 14065
    assert selection.replaces_best(74.8, 74.0) and selection.replaces_best(76.2, 74.0)
    assert not selection.replaces_best(76.3, 74.0)  # 74.0 * 1.03 = 76.22


def test_a_clearly_worse_later_checkpoint_leaves_the_best():
    assert selection.best_step([(1000, 74.0), (2000, 80.0)]) == 1000
    assert selection.best_step([(1000, 90.0), (2000, 60.0), (3000, 200.0)]) == 2000


def test_the_tolerance_is_from_the_lowest_so_the_best_cannot_creep_up():
    # 102 is within 3 % of 100 and 104 within 3 % of 102, but not of 100
    assert selection.best_step([(1, 100.0), (2, 102.0), (3, 104.0)]) == 2
    assert selection.best_step([(1, 100.0), (2, 102.0), (3, 104.0), (4, 103.0)]) == 4


def test_no_finite_figure_no_best():
    assert selection.best_step([]) is None
    assert selection.best_step([(1, math.nan), (2, math.inf)]) is None
    assert selection.best_step([(1, 50.0), (2, math.nan)]) == 1
    assert not selection.replaces_best(math.nan, None)
    assert selection.replaces_best(300.0, None)  # the first figure is the best so far
