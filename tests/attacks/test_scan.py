import json

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from attacks.exceptions import AttackError, PolicyError
from attacks.rmia import RMIAAttack
from attacks.scan import HyperparameterScan, SweepReference, check_rules, sweep_rows
from attacks.target import Target


def make_target(model, n=200, n_features=4, noise=0.15, n_classes=2, seed=0):
    """Fit ``model`` on half of a small noisy data set; the other half is held out."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, n_features))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (n_classes > 2) * (X[:, 2] > 0.5)
    flip = rng.rand(n) < noise
    y[flip] = rng.randint(n_classes, size=flip.sum())
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(n_features)])
    half = n // 2
    X_train, X_test = X.iloc[:half].reset_index(drop=True), X.iloc[half:].reset_index(drop=True)
    model.fit(X_train, y[:half])
    return Target(model, X_train, y[:half], X_test, y[half:])


def by_rule(findings):
    return {f.rule: f for f in findings}


# ------------------------------------------------------------ structural rules


def test_svc_embeds_its_support_vectors():
    target = make_target(SVC(gamma=3, probability=True))
    finding = by_rule(check_rules(target))["embeds_training_rows"]
    assert finding.risk == "high"
    assert finding.evidence["n_rows_embedded"] == len(target.model.support_)
    assert finding.evidence["fraction"] == pytest.approx(len(target.model.support_) / 100)


def test_large_gamma_is_high_and_small_gamma_is_silent():
    large = by_rule(check_rules(make_target(SVC(gamma=3, probability=True))))
    small = by_rule(check_rules(make_target(SVC(gamma=0.01, probability=True))))
    assert large["large_kernel_gamma"].risk == "high"
    assert large["large_kernel_gamma"].evidence["gamma"] == 3.0
    assert "large_kernel_gamma" not in small


def test_gamma_between_half_and_full_limit_is_medium():
    target = make_target(make_pipeline(StandardScaler(), SVC(gamma=0.7)))
    finding = by_rule(check_rules(target))["large_kernel_gamma"]
    assert finding.risk == "medium"
    assert finding.evidence["scaled_gamma"] == pytest.approx(0.7)


def test_gamma_is_judged_on_unit_variance_features():
    # gamma=3 on features with variance 1e-4 is a wide, smooth kernel.
    target = make_target(make_pipeline(StandardScaler(), SVC(gamma=3)))
    tiny = target.X_train * 0.01
    model = SVC(gamma=3).fit(tiny, target.y_train)
    rescaled = Target(model, tiny, target.y_train, target.X_test * 0.01, target.y_test)
    assert "large_kernel_gamma" in by_rule(check_rules(target))
    assert "large_kernel_gamma" not in by_rule(check_rules(rescaled))


def test_nearest_neighbours_embed_every_fitted_row():
    target = make_target(KNeighborsClassifier(n_neighbors=5))
    finding = by_rule(check_rules(target))["embeds_training_rows"]
    assert finding.evidence["n_rows_embedded"] == target.model.n_samples_fit_ == 100


def test_rules_look_through_a_pipeline():
    target = make_target(make_pipeline(StandardScaler(), SVC(gamma=3)))
    findings = by_rule(check_rules(target))
    svc = target.model[-1]
    assert findings["embeds_training_rows"].evidence["n_rows_embedded"] == len(svc.support_)
    assert findings["embeds_training_rows"].evidence["estimator"] == "SVC"
    assert findings["large_kernel_gamma"].risk == "high"


def test_rules_look_inside_calibrated_classifier():
    target = make_target(CalibratedClassifierCV(SVC(gamma=3), ensemble=False))
    finding = by_rule(check_rules(target))["embeds_training_rows"]
    svc = target.model.calibrated_classifiers_[0].estimator
    assert finding.evidence["n_rows_embedded"] == len(svc.support_)


def test_multiclass_gaussian_process_embeds_rows():
    target = make_target(GaussianProcessClassifier(), n=120, n_classes=3)
    finding = by_rule(check_rules(target))["embeds_training_rows"]
    assert finding.evidence["n_rows_embedded"] == 60


def test_forest_with_single_record_leaves_is_flagged():
    target = make_target(RandomForestClassifier(20, min_samples_leaf=1, random_state=0), noise=0.4)
    finding = by_rule(check_rules(target))["small_leaves"]
    assert finding.risk == "high"
    assert finding.evidence["smallest_leaf_records"] < 5
    assert finding.evidence["min_samples_leaf_param"] == 1
    assert finding.evidence["n_trees"] == 20


def test_leaf_counts_are_distinct_in_bag_training_records():
    target = make_target(RandomForestClassifier(10, random_state=0), noise=0.4)
    model = target.model
    leaves = model.apply(target.X_train)
    smallest = min(
        np.bincount(leaves[np.unique(rows), t])[np.unique(leaves[:, t])].min()
        for t, rows in enumerate(model.estimators_samples_)
    )
    n_leaves = sum(tree.get_n_leaves() for tree in model.estimators_)
    evidence = by_rule(check_rules(target))["small_leaves"].evidence
    assert evidence["n_leaves"] == n_leaves
    assert evidence["smallest_leaf_records"] == smallest


def test_forest_with_large_leaves_passes_and_measures_them():
    target = make_target(RandomForestClassifier(20, min_samples_leaf=20, random_state=0))
    assert "small_leaves" not in by_rule(check_rules(target))
    strict = by_rule(check_rules(target, thresholds={"min_leaf_records": 1000}))
    assert strict["small_leaves"].evidence["smallest_leaf_records"] >= 20
    assert strict["small_leaves"].evidence["min_samples_leaf_param"] == 20


def test_hist_gradient_boosting_leaves_are_measured():
    small = make_target(HistGradientBoostingClassifier(max_iter=10, min_samples_leaf=2))
    large = make_target(HistGradientBoostingClassifier(max_iter=10, min_samples_leaf=20))
    assert by_rule(check_rules(small))["small_leaves"].evidence["smallest_leaf_records"] >= 2
    assert "small_leaves" not in by_rule(check_rules(large))


def test_linear_model_on_many_records_has_no_dof_finding():
    target = make_target(LogisticRegression(), n=400)
    assert check_rules(target) == []


def test_one_nearest_neighbour_on_few_rows_has_no_residual_dof():
    finding = by_rule(check_rules(make_target(KNeighborsClassifier(1), n=40)))
    assert finding["degrees_of_freedom"].risk == "high"
    assert finding["degrees_of_freedom"].evidence["n_parameters"] == 20 * 4


def test_deep_tree_on_few_rows_has_too_many_parameters():
    target = make_target(DecisionTreeClassifier(random_state=0), noise=0.4)
    finding = by_rule(check_rules(target))["degrees_of_freedom"]
    assert finding.risk in {"medium", "high"}
    assert finding.evidence["n_parameters"] == target.model.get_n_leaves()
    assert finding.evidence["ratio"] > 0.1


def test_threshold_overrides_change_the_outcome():
    logistic = make_target(LogisticRegression(), n=400)
    svc = make_target(SVC(gamma=3, probability=True))
    strict = by_rule(check_rules(logistic, thresholds={"max_params_per_record": 0.01}))
    lenient = by_rule(check_rules(svc, thresholds={"svc_gamma_high": 10.0}))
    assert strict["degrees_of_freedom"].risk == "medium"
    assert "large_kernel_gamma" not in lenient


def test_unknown_or_invalid_threshold_is_a_policy_error():
    target = make_target(LogisticRegression())
    with pytest.raises(PolicyError):
        check_rules(target, thresholds={"min_leaf_record": 5})
    with pytest.raises(PolicyError):
        check_rules(target, thresholds={"min_leaf_records": -1})


def test_findings_are_json_able():
    findings = check_rules(make_target(RandomForestClassifier(5, random_state=0)))
    assert findings
    json.dumps([f.to_dict() for f in findings])


# ------------------------------------------------------------------- the sweep


@pytest.fixture(scope="module")
def overfit_svc():
    return make_target(SVC(gamma=10, probability=True, random_state=0), n=400, noise=0.2)


def scan(**kwargs):
    kwargs = {"n_reference_models": 2, "max_reference_models": 4, "random_state": 0, **kwargs}
    return HyperparameterScan(n_jobs=1, **kwargs)


def rmia_reference(target, n_models):
    m = RMIAAttack(n_models, random_state=1, n_jobs=1).fit(target).metrics_
    return SweepReference(
        f"RMIA ({n_models} reference models)", m.auc, m.auc_ci, m.tpr_at_fpr["0.01"], n_models
    )


def test_sweep_recommends_a_safer_gamma(overfit_svc):
    result = scan().fit(overfit_svc)
    rec = result.recommendation_
    assert {p.param for p in result.points_} == {"gamma", "C"}
    assert [(p.param, p.value) for p in result.points_ if p.is_original] == [("gamma", 10)]
    assert rec.param == "gamma" and rec.value != 10
    assert rec.auc_ci[1] < result.original_.auc
    assert rec.test_accuracy >= result.original_.test_accuracy - 0.01
    assert rec.text.startswith(f"Setting gamma={rec.value!r} lowers attack AUC from ")


def test_audited_gamma_is_scored_as_exposed_as_the_audits_rmia(famous_leaky):
    audit = rmia_reference(famous_leaky, 8)
    result = scan(max_reference_models=8).fit(famous_leaky)
    audited = [p for p in result.points_ if p.is_original]
    assert [(p.param, p.value) for p in audited] == [("gamma", 3.0)]
    assert audited[0].auc == result.original_.auc >= audit.auc_ci[0]
    assert result.original_.n_reference_models == 8
    assert result.recommendation_.text.startswith(f"Setting gamma={result.recommendation_.value}")


def test_recommendation_rests_on_no_fewer_models_than_the_audit(famous_leaky):
    audit = rmia_reference(famous_leaky, 8)
    result = scan().fit(famous_leaky, reference=audit)
    rec = result.recommendation_
    assert result.rung_counts_ == [2, 4] and result.n_confirmation_models_ == 8
    assert rec.param == "gamma" and rec.n_reference_models >= 8
    assert rec.auc_ci[1] < audit.auc
    assert (result.original_.auc, result.original_.attack) == (audit.auc, audit.attack)
    assert f"from {audit.auc:.2f} to {rec.auc:.2f}" in rec.text


def test_no_change_is_recommended_unless_clearly_below_the_audit(famous_leaky):
    weak = SweepReference("Worst-case attack", 0.55, (0.5, 0.6), 0.01, 0)
    result = scan().fit(famous_leaky, reference=weak)
    assert result.recommendation_.param is None
    assert result.recommendation_.text.startswith("No swept setting is clearly safer")
    assert result.recommendation_.auc == 0.55


def test_a_setting_that_fails_accuracy_is_refitted_but_never_attacked(famous_leaky, monkeypatch):
    import attacks.scan
    import attacks.shadows

    fitted_gammas, real_fit = [], attacks.shadows.fit_quietly

    def counting_fit(model, X, y):
        fitted_gammas.append(model.get_params()["gamma"])
        return real_fit(model, X, y)

    monkeypatch.setattr(attacks.shadows, "fit_quietly", counting_fit)
    monkeypatch.setattr(attacks.scan, "fit_quietly", counting_fit)
    result = scan(grid={"gamma": [0.1, 10]}).fit(famous_leaky)
    assert fitted_gammas.count(10) == 1  # the refit: its accuracy is 0.54, the original's 0.70
    assert [(s["value"], s["test_accuracy"]) for s in result.skipped_] == [(10, 0.54)]
    assert [p.value for p in result.points_] == [0.1, 3.0]
    reference_fits = fitted_gammas.count(0.1) - 1 + fitted_gammas.count(3.0)
    assert reference_fits == result.n_reference_fits_ > 0


def test_an_attack_that_ranks_members_last_is_scored_as_its_mirror():
    # 100 rows at gamma 10: Platt scaling gives the training records the lower
    # confidence, and RMIA's AUC falls far below 0.5 (LiRA: 0.99).
    target = make_target(SVC(gamma=10, probability=True, random_state=0), noise=0.2)
    result = scan(grid={"gamma": [0.1]}).fit(target)
    assert result.original_.attack == "RMIA (4 reference models, mirrored)"
    assert result.original_.auc > 0.9
    assert result.recommendation_.value == 0.1


def test_sweep_is_deterministic_and_json_able(overfit_svc):
    first = scan(grid={"gamma": [0.1]}).fit(overfit_svc)
    second = scan(grid={"gamma": [0.1]}).fit(overfit_svc)
    assert first.points_ == second.points_
    assert first.recommendation_ == second.recommendation_
    json.dumps({"rows": sweep_rows(first), "rec": first.recommendation_.to_dict()})


def test_progress_names_every_setting_in_order(famous_leaky):
    calls = []
    result = scan().fit(famous_leaky, progress=lambda stage, done: calls.append((stage, done)))
    stages = [stage for stage, _ in calls]
    fractions = [done for _, done in calls]
    assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] < 1
    assert "sweep: refitting gamma=0.1 (2 of 6)" in stages
    assert "sweep: the current setting (1 of 5, 2 reference models)" in stages
    attacked = {f"{p.param}={p.value!r}" for p in result.points_ if not p.is_original}
    assert all(any(stage.startswith(f"sweep: {a} (") for stage in stages) for a in attacked)


def test_progress_is_reported_once_per_grid_point_refitted_and_per_setting_attacked():
    target = make_target(DecisionTreeClassifier(random_state=0), n=120)
    calls = []
    result = scan(grid={"min_samples_leaf": [5, 20]}, max_reference_models=2).fit(
        target, progress=lambda stage, done: calls.append(stage)
    )
    refits = [stage for stage in calls if stage.startswith("sweep: refitting ")]
    assert refits == [
        "sweep: refitting min_samples_leaf=5 (1 of 2)",
        "sweep: refitting min_samples_leaf=20 (2 of 2)",
    ]
    attacked = [stage for stage in calls if "reference models)" in stage]
    assert len(attacked) == len(result.points_) == 3  # the current setting and both changes
    assert len(set(attacked)) == len(attacked)  # each once


def test_sweep_prefixes_pipeline_step_names():
    target = make_target(make_pipeline(StandardScaler(), KNeighborsClassifier(5)), n=120)
    result = scan().fit(target)
    assert {p.param for p in result.points_} == {"kneighborsclassifier__n_neighbors"}
    assert max(p.value for p in result.points_) <= 60
    assert [p.value for p in result.points_ if p.is_original] == [5]


def test_sweep_accepts_bare_names_for_a_pipeline():
    target = make_target(make_pipeline(StandardScaler(), LogisticRegression()), n=120)
    result = scan(grid={"C": [0.1]}).fit(target)
    assert {p.param for p in result.points_} == {"logisticregression__C"}


def test_current_setting_already_safest():
    target = make_target(LogisticRegression(), n=120)
    result = scan(grid={"C": [1.0]}).fit(target)
    assert len(result.points_) == 1 and result.points_[0].is_original
    assert result.recommendation_.param is None
    assert "already the safest" in result.recommendation_.text


def test_unfittable_point_is_skipped_with_reason():
    target = make_target(KNeighborsClassifier(5), n=120)
    result = scan(grid={"n_neighbors": [500]}).fit(target)
    assert [s["value"] for s in result.skipped_] == [500]
    assert [p.value for p in result.points_] == [5]


def test_unknown_grid_parameter_is_refused():
    with pytest.raises(AttackError):
        scan(grid={"no_such_param": [1]}).fit(make_target(LogisticRegression()))


def test_unknown_model_type_gives_empty_sweep():
    result = scan().fit(make_target(GaussianNB()))
    assert result.points_ == [] and sweep_rows(result) == []
    assert result.recommendation_ is None and result.original_ is None
    assert "GaussianNB" in result.note_


def test_the_gamma_rule_names_the_setting_the_researcher_wrote(famous_mitigated):
    reason = by_rule(check_rules(famous_mitigated))["large_kernel_gamma"].reason
    assert reason.startswith("The rbf kernel's setting gamma=0.1 is")
    assert "as narrow as gamma 56.5 on standardised ones" in reason
