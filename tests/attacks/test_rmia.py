import numpy as np
import pytest

from attacks.exceptions import AttackError
from attacks.rmia import RMIAAttack


def test_rmia_with_two_reference_models_finds_the_leaky_svc(famous_leaky):
    attack = RMIAAttack(n_reference_models=2, random_state=0, n_jobs=2).fit(famous_leaky)
    assert attack.metrics_.auc > 0.9
    assert ((attack.probabilities_ >= 0) & (attack.probabilities_ <= 1)).all()


def test_probabilities_rank_like_the_scores(famous_mitigated):
    attack = RMIAAttack(n_reference_models=2, random_state=0, n_jobs=2).fit(famous_mitigated)
    order = np.argsort(attack.scores_)
    assert np.all(np.diff(attack.probabilities_[order]) >= 0)


def test_rmia_is_deterministic(famous_mitigated):
    a = RMIAAttack(2, random_state=5, n_jobs=2).fit(famous_mitigated)
    b = RMIAAttack(2, random_state=5, n_jobs=2).fit(famous_mitigated)
    np.testing.assert_array_equal(a.scores_, b.scores_)


def test_offline_needs_a_model_that_never_saw_each_record(famous_leaky):
    with pytest.raises(AttackError):
        RMIAAttack(1, online=False, random_state=0).fit(famous_leaky)
    attack = RMIAAttack(2, online=False, random_state=0, n_jobs=2).fit(famous_leaky)
    assert attack.metrics_.auc > 0.8
