"""The plain-data pieces of report.json: stable descriptions of objects."""

import json

import numpy as np
from sklearn.ensemble import BaggingClassifier
from sklearn.tree import DecisionTreeClassifier

from attacks.report import json_safe, model_summary, report_run
from tests.attacks.report_fixture import sample_report, schema_1


def test_the_teaching_examples_random_state_is_described_not_its_repr(famous_leaky):
    params = model_summary(famous_leaky)["params"]
    assert params["random_state"] == "RandomState instance"
    assert "0x" not in json.dumps(params)


def test_two_generators_get_the_same_description():
    first, second = np.random.RandomState(1), np.random.RandomState(1)
    assert repr(first) != repr(second)  # their reprs differ in the address
    assert json_safe([first, np.random.default_rng(2)]) == json_safe(
        [second, np.random.default_rng(3)]
    )


def test_an_estimator_parameter_shows_what_it_changed_and_no_address():
    tree = DecisionTreeClassifier(max_depth=3, random_state=np.random.RandomState(0))
    params = json_safe(BaggingClassifier(tree).get_params(deep=False))
    assert (
        params["estimator"]
        == "DecisionTreeClassifier(max_depth=3, random_state='RandomState instance')"
    )
    assert json_safe(DecisionTreeClassifier()) == "DecisionTreeClassifier()"


def test_functions_classes_and_sets_have_stable_forms():
    def local():
        pass

    assert json_safe([np.log1p, np.float64, local, object()]) == [
        "log1p",
        "float64",
        "test_functions_classes_and_sets_have_stable_forms.<locals>.local",
        "object instance",
    ]
    assert json_safe({"s": {"b", "a", "c"}}) == {"s": ["a", "b", "c"]}
    assert json_safe([np.float32(0.5), np.nan, np.arange(2)]) == [0.5, None, [0, 1]]


def test_the_run_of_a_schema_1_report_is_rebuilt_from_where_it_was():
    report = sample_report()
    assert report_run(schema_1(report)) == report["run"]
    assert report_run({"run": "junk", "attacks": [None, {"name": "lira"}]}) == {
        "generated_at": None,
        "seconds": None,
        "attack_seconds": {"lira": None},
        "n_jobs": None,
    }
