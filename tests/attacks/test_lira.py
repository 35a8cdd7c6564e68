import numpy as np
import pytest
from scipy.stats import norm
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from attacks.exceptions import AttackError
from attacks.lira import LiRAAttack
from attacks.shadows import shadow_pool_fit
from attacks.target import Target
from tests.attacks.conftest import make_target


def test_online_lira_finds_the_leaky_svc(famous_leaky):
    attack = LiRAAttack(n_shadow_models=8, random_state=0, n_jobs=2).fit(famous_leaky)
    assert attack.metrics_.auc > 0.8  # 0.99 with 100 shadows (benchmarks/)
    assert attack.scores_.shape == (400,)


def test_same_seed_same_scores_different_seed_different(famous_mitigated):
    a = LiRAAttack(n_shadow_models=4, random_state=3, n_jobs=2).fit(famous_mitigated)
    b = LiRAAttack(n_shadow_models=4, random_state=3, n_jobs=1).fit(famous_mitigated)
    c = LiRAAttack(n_shadow_models=4, random_state=4, n_jobs=2).fit(famous_mitigated)
    np.testing.assert_array_equal(a.scores_, b.scores_)
    assert not np.array_equal(a.scores_, c.scores_)


def test_offline_scores_do_not_saturate_on_a_forest():
    """Offline scores are z-values: no pile of ties at the top as a CDF gives."""
    X, y = make_classification(n_samples=1000, n_features=10, flip_y=0.1, random_state=0)
    forest = make_target(RandomForestClassifier(50, random_state=0), X, y, 500)
    attack = LiRAAttack(n_shadow_models=8, online=False, random_state=0, n_jobs=2).fit(forest)
    top = np.sort(attack.scores_)[-20:]
    assert len(np.unique(top)) == 20
    assert norm.cdf(top).min() > 0.99  # where a CDF score would have tied at 1.0
    assert np.isfinite(attack.scores_).all()


def test_lira_works_on_a_pipeline(famous_data):
    train, test = famous_data
    features = [c for c in train.columns if c != "response"]
    model = make_pipeline(StandardScaler(), SVC(gamma=3, probability=True, random_state=0))
    model.fit(train[features], train["response"])
    target = Target(
        model,
        train[features],
        train["response"].to_numpy(),
        test[features],
        test["response"].to_numpy(),
    )
    attack = LiRAAttack(n_shadow_models=4, random_state=0, n_jobs=2).fit(target)
    assert attack.metrics_.auc > 0.8


def test_one_shadow_is_refused(famous_leaky):
    with pytest.raises(AttackError):
        LiRAAttack(n_shadow_models=1, random_state=0).fit(famous_leaky)


def test_pool_masks_are_paired_halves(famous_leaky):
    pool = shadow_pool_fit(famous_leaky, n_shadow_models=6, random_state=0, n_jobs=2)
    assert (pool.in_mask.sum(axis=0) == 3).all()
    np.testing.assert_array_equal(pool.in_mask[0], ~pool.in_mask[1])


def test_probability_floor_follows_what_the_model_can_express():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    from attacks.target import EPS, TREE_FLOOR, probability_floor

    assert probability_floor(RandomForestClassifier(50)) == 0.01  # half of one vote in 50
    assert probability_floor(make_pipeline(StandardScaler(), RandomForestClassifier(100))) == 0.005
    assert probability_floor(KNeighborsClassifier(5)) == 0.1
    assert probability_floor(DecisionTreeClassifier()) == TREE_FLOOR
    assert probability_floor(LogisticRegression()) == EPS


def test_saturated_forest_votes_do_not_swamp_online_lira():
    """Forest probabilities of exactly 1.0 once made online LiRA weaker than offline."""
    X, y = make_classification(n_samples=1200, n_features=10, flip_y=0.05, random_state=2)
    forest = make_target(RandomForestClassifier(50, random_state=0), X, y, 600)
    online, offline = [], []
    for seed in range(3):  # one pool's luck moves either AUC by about 0.01
        pool = shadow_pool_fit(forest, n_shadow_models=8, random_state=seed, n_jobs=2)
        online.append(LiRAAttack(online=True).fit(forest, pool=pool).metrics_.auc)
        offline.append(LiRAAttack(online=False).fit(forest, pool=pool).metrics_.auc)
    assert min(online) > 0.6
    assert np.mean(online) >= np.mean(offline) - 0.02


def test_sixteen_shadows_find_the_teaching_example_as_sixty_four_do(famous_leaky):
    """18 non-members repeat a training row: a pooled variance scored one of them top
    and gave TPR 0% at 1% FPR at 16 shadows; the shadows now choose per-record."""
    pool = shadow_pool_fit(famous_leaky, n_shadow_models=64, random_state=0, n_jobs=2)
    small = LiRAAttack(online=True).fit(famous_leaky, pool=pool.first(16))
    large = LiRAAttack(online=True).fit(famous_leaky, pool=pool)
    assert small.variance_ == "per-record"
    assert small.metrics_.tpr_at_fpr["0.01"] >= 0.80
    assert abs(small.metrics_.auc - large.metrics_.auc) <= 0.02
    pooled = LiRAAttack(online=True, fix_variance=True).fit(famous_leaky, pool=pool.first(16))
    assert pooled.metrics_.tpr_at_fpr["0.01"] < 0.2  # what "auto" chose against, measured
