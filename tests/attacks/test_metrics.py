import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from attacks import metrics


def _scores(n_pos=300, n_neg=200, shift=1.0, seed=0):
    rng = np.random.RandomState(seed)
    membership = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    return membership, rng.randn(n_pos + n_neg) + shift * membership


def test_auc_matches_sklearn_and_interval_brackets_it():
    membership, scores = _scores()
    auc, (low, high) = metrics.auc_with_ci(membership, scores)
    assert auc == pytest.approx(roc_auc_score(membership, scores))
    assert low < auc < high
    assert 0.03 < high - low < 0.15


def test_interval_narrows_with_more_records():
    small = metrics.auc_with_ci(*_scores(100, 100))[1]
    large = metrics.auc_with_ci(*_scores(5000, 5000))[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 4


def test_tpr_is_null_where_fpr_cannot_be_resolved():
    membership, scores = _scores(n_pos=300, n_neg=200)
    tpr = metrics.tpr_at_fpr(membership, scores)
    assert tpr["0.001"] is None  # 1/200 > 0.001
    assert tpr["0.01"] is not None and tpr["0.1"] is not None
    assert set(tpr) == {"0.001", "0.01", "0.1"}


def test_tpr_at_fpr_on_a_perfect_attack_is_one():
    membership = np.r_[np.ones(50), np.zeros(2000)]
    scores = np.r_[np.full(50, 10.0), np.zeros(2000)]
    assert metrics.tpr_at_fpr(membership, scores) == {"0.001": 1.0, "0.01": 1.0, "0.1": 1.0}


def test_tpr_respects_the_fpr_budget():
    membership, scores = _scores(n_pos=1000, n_neg=1000, shift=0.5)
    tpr = metrics.tpr_at_fpr(membership, scores)["0.1"]
    threshold = np.quantile(scores[membership == 0], 0.9)
    assert tpr == pytest.approx((scores[membership == 1] > threshold).mean(), abs=0.01)


def test_advantage_is_zero_for_a_useless_attack():
    membership = np.r_[np.ones(100), np.zeros(100)]
    assert metrics.membership_advantage(membership, np.zeros(200)) == 0.0


def test_roc_points_are_thinned_and_monotone():
    membership, scores = _scores(5000, 5000)
    fpr, tpr = metrics.roc_points(membership, scores)
    assert len(fpr) <= metrics.ROC_POINTS + 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def _tie_across_one_percent():
    """400 non-members, 200 members: 10 members above everything, then 50 members and
    6 non-members on one score. 1% FPR allows 4 false positives, so it falls inside
    the tie: TPR 10/200 if the tie's non-members come first, 60/200 if its members do."""
    membership = np.r_[np.ones(10), np.ones(50), np.zeros(6), np.ones(140), np.zeros(394)]
    scores = np.r_[np.full(10, 9.0), np.full(56, 5.0), np.linspace(0, 4, 534)]
    return membership, scores


def test_a_tie_straddling_a_level_leaves_its_tpr_unresolved_with_the_range():
    membership, scores = _tie_across_one_percent()
    m = metrics.attack_metrics(membership, scores)
    assert m.tpr_at_fpr["0.01"] is None
    assert m.tpr_unresolved["0.01"] == {
        "reason": "tie",
        "tpr_range": [10 / 200, 60 / 200],
        "tied_members": 50,
        "tied_non_members": 6,
    }
    assert "50 members and 6 non-members" in metrics.tpr_unresolved_text(m.tpr_unresolved["0.01"])


def test_levels_the_tie_does_not_straddle_keep_their_value():
    membership, scores = _tie_across_one_percent()
    m = metrics.attack_metrics(membership, scores)
    assert m.tpr_unresolved["0.001"] == {"reason": "too_few_non_members"}
    assert "0.1" not in m.tpr_unresolved
    threshold = np.sort(scores[membership == 0])[::-1][40]  # 40 false positives allowed
    assert m.tpr_at_fpr["0.1"] == (scores[membership == 1] > threshold).mean()


def test_a_tie_within_the_tpr_resolution_keeps_the_value_below_it():
    membership, scores = _tie_across_one_percent()
    scores[10:60] = np.r_[np.full(49, 6.0), 5.0]  # one member left tied with the 6
    assert metrics.tpr_at_fpr(membership, scores)["0.01"] == 59 / 200


def test_the_roc_has_one_vertex_per_distinct_score_whatever_the_order():
    membership, scores = _tie_across_one_percent()
    fpr, tpr = metrics.roc_points(membership, scores, n_points=1000)
    assert len(fpr) == len(np.unique(scores)) + 1
    flipped = metrics.roc_points(membership[::-1], scores[::-1], n_points=1000)
    assert (fpr, tpr) == flipped
    assert [fpr[2], tpr[2]] == [6 / 400, 60 / 200]  # the tie is one step, not a staircase


def test_advantage_counts_a_tie_as_one_vertex():
    membership = np.r_[np.ones(50), np.zeros(50)]
    scores = np.r_[np.ones(50), np.ones(25), np.zeros(25)]
    assert metrics.membership_advantage(membership, scores) == 0.5
    assert metrics.membership_advantage(membership[::-1], scores[::-1]) == 0.5


@pytest.mark.parametrize(
    "membership, scores",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3]),
        ([1, 0], [0.1, np.nan]),
        ([1, 0, 1], [0.1, 0.2]),
    ],
)
def test_bad_input_is_refused(membership, scores):
    with pytest.raises(ValueError):
        metrics.attack_metrics(np.array(membership), np.array(scores))
