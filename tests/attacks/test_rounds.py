"""The adaptive shadow count: rounds, the stopping rule, and the same stop for the same seed."""

import numpy as np
import pytest

from attacks.audit import AuditConfig, audit_run
from attacks.policy import default_policy_text, load_policy
from attacks.rounds import Round, RoundResult, RoundRule, round_counts, rounds_decide
from attacks.shadows import shadow_pool_fit, shadow_pool_from_outputs, shadow_train


def _result(n, attack="rmia", auc=0.9, auc_se=0.01, tpr=0.3, tpr_se=0.02):
    return RoundResult(
        n_models=n,
        attack=attack,
        auc=auc,
        auc_se=auc_se,
        tpr_at_fpr={"0.001": None, "0.01": None, "0.1": tpr},
        tpr_se={"0.001": None, "0.01": None, "0.1": tpr_se},
    )


RULE = RoundRule(min_models=4, max_models=32, tolerance=2.0, max_auc_change=0.005)


def test_rounds_double_from_the_minimum_to_the_maximum():
    assert round_counts(RULE) == [4, 8, 16, 32]
    assert round_counts(RoundRule(min_models=2, max_models=20)) == [2, 4, 8, 16, 20]
    assert round_counts(RoundRule.fixed(16)) == [16]


def test_a_change_within_tolerance_stops_and_says_by_how_much():
    history = [Round(4, [_result(4, auc=0.900)]), Round(8, [_result(8, auc=0.903, tpr=0.31)])]
    stop, reason = rounds_decide(history, RULE, n_non_members=200)
    assert stop
    assert "from 4 to 8 models" in reason and "AUC by 0.0030" in reason
    assert "TPR at 10% FPR by 0.010" in reason


@pytest.mark.parametrize(
    "later",
    [
        {"auc": 0.93},  # 3 standard errors
        {"auc": 0.907, "auc_se": 0.01},  # within 2 SE but above the absolute cap
        {"tpr": 0.36},  # TPR moved 3 SE
    ],
)
def test_a_change_beyond_tolerance_trains_another_round(later):
    history = [Round(4, [_result(4)]), Round(8, [_result(8, **later)])]
    assert rounds_decide(history, RULE, n_non_members=200) == (False, "")


def test_a_tpr_at_too_few_false_positives_is_not_waited_for():
    history = [Round(4, [_result(4)]), Round(8, [_result(8, tpr=0.9)])]
    # 10% of 50 non-members is 5 false positives, under the policy's 10
    assert rounds_decide(history, RULE, n_non_members=50)[0]


def test_the_strongest_attack_is_compared_with_itself():
    previous = [_result(4, "lira", auc=0.80), _result(4, "rmia", auc=0.90)]
    last = [_result(8, "lira", auc=0.95), _result(8, "rmia", auc=0.90)]
    # LiRA overtook RMIA: its own AUC moved 0.15, so the answer has not settled
    assert not rounds_decide([Round(4, previous), Round(8, last)], RULE, n_non_members=200)[0]


def test_the_maximum_and_a_fixed_count_stop_with_their_reason():
    far = [Round(16, [_result(16, auc=0.7)]), Round(32, [_result(32, auc=0.9)])]
    stop, reason = rounds_decide(far, RULE, n_non_members=200)
    assert stop and "maximum of 32" in reason
    stop, reason = rounds_decide([Round(8, [])], RoundRule.fixed(8), n_non_members=200)
    assert stop and "fixed count of 8" in reason


def test_a_round_no_attack_could_score_trains_another():
    assert rounds_decide([Round(4, []), Round(8, [])], RULE, n_non_members=200) == (False, "")


def test_shadow_k_is_the_same_whether_trained_alone_in_a_round_or_in_one_pool(famous_leaky):
    whole = shadow_pool_fit(famous_leaky, n_shadow_models=6, random_state=5, n_jobs=2)
    first = shadow_pool_fit(famous_leaky, n_shadow_models=2, random_state=5, n_jobs=1)
    rest = shadow_pool_fit(famous_leaky, n_shadow_models=4, start=2, random_state=5, n_jobs=2)
    grown = first.joined(rest)
    np.testing.assert_array_equal(grown.in_mask, whole.in_mask)
    np.testing.assert_array_equal(grown.confidences, whole.confidences)
    alone = shadow_pool_from_outputs(
        [shadow_train(famous_leaky, index=k, base_seed=5) for k in (1, 0)]
    )
    np.testing.assert_array_equal(alone.confidences, whole.first(2).confidences)
    assert (whole.in_mask.sum(axis=0) == 3).all()  # paired halves: IN for half of them


def test_outputs_with_a_gap_are_refused(famous_leaky):
    with pytest.raises(ValueError, match="without gaps"):
        shadow_pool_from_outputs([shadow_train(famous_leaky, index=1, base_seed=5)])


@pytest.fixture(scope="module")
def adaptive_reports(famous_leaky):
    text = default_policy_text().replace("max_shadow_models = 64", "max_shadow_models = 16")
    config = AuditConfig(n_jobs=2, attacks=("lira", "rmia"), sweep=False, label="response")
    return [audit_run(famous_leaky, config=config, policy=load_policy(text)) for _ in range(2)]


def test_the_same_seed_stops_at_the_same_round(adaptive_reports):
    first, second = (r["shadow_rounds"] for r in adaptive_reports)
    assert first == second
    assert first["n_models"] in (4, 8, 16)
    counts = [r["n_models"] for r in first["rounds"]]
    assert counts == [4, 8, 16][: len(counts)] and counts[-1] == first["n_models"]
    assert first["stopped"].startswith(("Converged", "Reached"))
    titles = [a["title"] for a in adaptive_reports[0]["attacks"]]
    assert f"LiRA (online, {first['n_models']} shadow models)" in titles
