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
