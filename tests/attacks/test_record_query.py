"""Record queries after an audit: the same answer as the audit's --record, from its seeds."""

import json

import numpy as np
import pandas as pd
import pytest

from attacks.audit import AuditConfig, Record, Upload, audit_run, shadow_base_seed
from attacks.datasets import FAMOUS_PATIENT, FEATURES
from attacks.exceptions import AuditError, IntakeError
from attacks.policy import load_policy
from attacks.record_query import (
    MEMBER,
    record_check,
    record_object,
    record_query,
)
from attacks.shadows import shadow_pool_fit

POLICY = load_policy()
#: Two pool attacks and the teaching example's own, four shadows: a few seconds.
CONFIG = AuditConfig(
    n_shadow_models=4, attacks=("lira", "rmia", "shadow"), n_jobs=1, sweep=False, label="response"
)
STRANGER = {**FAMOUS_PATIENT, "age": 21, "bmi_group": 1}
SAME = ("membership_probability", "attack", "pool_row", "attacks", "label_source")


def _audited(target, row: dict, y=None) -> dict:
    record = Record(X=pd.DataFrame([row]), y=y)
    return audit_run(target, config=CONFIG, policy=POLICY, record=record)["record"]


def _asked(target, row: dict, y=None, shadows=None) -> dict:
    record = Record(X=pd.DataFrame([row]), y=y)
    return record_query(
        target, config=CONFIG, policy=POLICY, record=record, n_shadow_models=4, shadows=shadows
    )


def test_a_training_row_is_answered_as_the_audit_would_and_called_a_member(famous_leaky):
    answer = _asked(famous_leaky, FAMOUS_PATIENT)
    assert {k: answer[k] for k in SAME} == {
        k: _audited(famous_leaky, FAMOUS_PATIENT)[k] for k in SAME
    }
    assert answer["pool_row"] == {"set": "train", "index": 199}
    assert answer["answer"] == MEMBER and answer["reasons"]
    assert answer["hash"] == famous_leaky.record_hash(famous_leaky.X_train, 199)
    assert answer["shadows"] == "trained again"
    assert "FAMOUS" not in json.dumps(answer) and "62" not in json.dumps(answer["hash"])


def test_a_training_row_is_answered_from_stored_shadows_without_training(famous_leaky, monkeypatch):
    pool = shadow_pool_fit(
        famous_leaky, n_shadow_models=4, random_state=shadow_base_seed(CONFIG), n_jobs=1
    )
    trained = _asked(famous_leaky, FAMOUS_PATIENT)
    monkeypatch.setattr("attacks.record_query.shadow_pool_fit", None)  # would fail if called
    stored = _asked(famous_leaky, FAMOUS_PATIENT, shadows=list(pool.confidences))
    assert stored["shadows"] == "stored"
    assert {k: stored[k] for k in SAME} == {k: trained[k] for k in SAME}


def test_stored_shadows_of_other_data_are_refused(famous_leaky):
    with pytest.raises(AuditError, match="do not match"):
        _asked(famous_leaky, FAMOUS_PATIENT, shadows=[np.full(3, 0.5)] * 4)


def test_a_row_outside_the_data_is_scored_by_shadows_trained_again(famous_leaky):
    answer = _asked(famous_leaky, STRANGER, y=np.array([1]))
    audited = _audited(famous_leaky, STRANGER, y=np.array([1]))
    assert answer["pool_row"] is None
    assert {k: answer[k] for k in SAME} == {k: audited[k] for k in SAME}
    assert all(0 <= a["membership_probability"] <= 1 for a in answer["attacks"])
    assert answer["titles"]["lira"] == "LiRA (online, 4 shadow models)"


def test_a_one_row_csv_and_a_list_of_one_read_as_the_same_record():
    csv = ",".join(FAMOUS_PATIENT) + "\n" + ",".join(map(str, FAMOUS_PATIENT.values())) + "\n"
    from_csv = record_object(Upload(name="row.CSV", data=csv.encode()))
    from_json = record_object(Upload(name="r.json", data=json.dumps([FAMOUS_PATIENT]).encode()))
    assert from_csv == from_json == FAMOUS_PATIENT


@pytest.mark.parametrize(
    "name, data, sentence",
    [
        ("r.csv", b"a,b\n1,2\n3,4\n", "not 2 rows"),
        ("r.csv", b"a,b\n", "not 0 rows"),
        ("r.csv", b"a,b\n1\n", "one value for each"),
        ("r.json", b"[{}, {}]", "not a list of 2"),
        ("r.json", b"[1]", "one JSON object"),
        ("r.json", b"{", "not valid JSON"),
        ("r.json", b"\xff\xfe", "not UTF-8"),
        ("r.xlsx", b"PK", "CSV (.csv) or JSON"),
        ("r.json", b"", "empty"),
        ("r.json", b" " * (2**20 + 1), "larger than"),
    ],
)
def test_a_file_that_is_not_one_record_is_refused_in_one_sentence(name, data, sentence):
    with pytest.raises(IntakeError, match=sentence.replace("(", r"\(").replace(")", r"\)")) as e:
        record_object(Upload(name=name, data=data))
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


@pytest.mark.parametrize(
    "change, sentence",
    [
        ({"age": None}, "has no value"),
        ({"age": "old"}, "must be a finite number"),
        ({"height": 1}, "unknown key"),
        ({"response": 7}, "does not know"),
    ],
)
def test_a_record_the_model_cannot_take_is_refused(change, sentence):
    record = {**FAMOUS_PATIENT, **change}
    with pytest.raises(IntakeError, match=sentence):
        record_check(
            record, feature_names=FEATURES, label="response", classes=["0", "1"], allow_text=False
        )


def test_a_record_missing_a_feature_is_refused():
    record = {k: v for k, v in FAMOUS_PATIENT.items() if k != "age"}
    with pytest.raises(IntakeError, match="lacks the feature"):
        record_check(
            record, feature_names=FEATURES, label="response", classes=[0, 1], allow_text=False
        )
