import numpy as np
from sklearn.datasets import make_classification
from sklearn.tree import DecisionTreeClassifier

from attacks.worst_case import WorstCaseAttack
from tests.attacks.conftest import make_target


class HardLabelTree(DecisionTreeClassifier):
    """A tree that answers labels only, as some released models do."""

    def __getattribute__(self, name):
        if name == "predict_proba":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_hard_label_perfect_tree_is_not_a_coin_flip():
    X, y = make_classification(n_samples=800, n_features=6, flip_y=0.2, random_state=0)
    target = make_target(HardLabelTree(random_state=0), X, y, 400)
    assert not hasattr(target.model, "predict_proba")
    attack = WorstCaseAttack(random_state=0, n_baselines=3).fit(target)
    assert attack.metrics_.auc > 0.6
    assert attack.p_value_ < 0.01


def test_baseline_sits_near_chance_on_the_safe_model(safe_logreg):
    attack = WorstCaseAttack(random_state=0, n_baselines=3).fit(safe_logreg)
    assert abs(np.mean(attack.baseline_aucs_) - 0.5) < 0.03
    assert attack.metrics_.auc < 0.56


def test_worst_case_is_deterministic(famous_leaky):
    a = WorstCaseAttack(random_state=1, n_baselines=2).fit(famous_leaky)
    b = WorstCaseAttack(random_state=1, n_baselines=2).fit(famous_leaky)
    np.testing.assert_array_equal(a.scores_, b.scores_)
    np.testing.assert_array_equal(a.baseline_aucs_, b.baseline_aucs_)
