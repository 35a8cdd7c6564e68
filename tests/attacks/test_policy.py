import pytest

from attacks.exceptions import PolicyError
from attacks.policy import default_policy_text, load_policy


def test_default_policy_is_valid_and_identified():
    policy = load_policy()
    assert policy.name == "tre-audit default"
    assert len(policy.sha256) == 64
    assert policy["attacks", "auc_medium"] < policy["attacks", "auc_high"]
    assert policy.to_dict()["thresholds"]["rules"]["min_leaf_records"] == 5


def test_a_changed_threshold_changes_the_identity():
    text = default_policy_text().replace("auc_high = 0.8", "auc_high = 0.75")
    changed = load_policy(text)
    assert changed["attacks", "auc_high"] == 0.75
    assert changed.sha256 != load_policy().sha256


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("auc_high = 0.8", "auc_high = 1.8", "between"),
        ("auc_high = 0.8", 'auc_high = "high"', "needs a number"),
        ("auc_medium = 0.6", "auc_medium = 0.9", "must not exceed"),
        ("min_shadow_models = 4", "min_shadow_models = 1", "between"),
        ("max_shadow_models = 64", "max_shadow_models = 3", "must not exceed"),
        ("convergence_tolerance = 2.5", "convergence_tolerance = -1", "between"),
        ("[attacks]", "[attacks", "not valid TOML"),
        ("max_calls_per_day = 200", "max_calls_per_day = 0", "between"),
        ("max_rows_per_day = 1000000", "max_rows_per_day = -1", "between"),
    ],
)
def test_bad_policies_are_refused_in_one_sentence(old, new, message):
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(default_policy_text().replace(old, new))
    assert "\n" not in str(info.value)


def test_the_serving_budget_is_in_the_policy_and_older_policies_get_the_default():
    assert load_policy()["serving", "max_calls_per_day"] == 200
    text = default_policy_text().replace("max_rows_per_day = 1000000", "max_rows_per_day = 50")
    assert load_policy(text)["serving", "max_rows_per_day"] == 50
    before_serving = default_policy_text().split("[serving]")[0]
    assert load_policy(before_serving)["serving", "max_rows_per_day"] == 1_000_000


def test_a_policy_from_before_adaptive_rounds_asks_for_its_fixed_count():
    from attacks.policy import round_rule

    text = default_policy_text().replace(
        "min_shadow_models = 4\nmax_shadow_models = 64\n", "n_shadow_models = 16\n"
    )
    assert "n_shadow_models = 16" in text
    rule = round_rule(load_policy(text))
    assert (rule.min_models, rule.max_models) == (16, 16)
    assert round_rule(load_policy()).max_models == 64


def test_counts_are_whole_numbers_even_when_written_as_floats():
    text = default_policy_text().replace("max_rows_per_day = 1000000", "max_rows_per_day = 1e6")
    assert "max_rows_per_day = 1e6" in text
    rows = load_policy(text)["serving", "max_rows_per_day"]
    assert rows == 1_000_000 and isinstance(rows, int)
    with pytest.raises(PolicyError, match="whole number"):
        load_policy(default_policy_text().replace("top_k = 10", "top_k = 2.5"))
