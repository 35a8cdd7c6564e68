"""Record questions through the API: ask (multipart or JSON), poll, read the answer."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from attacks.datasets import FAMOUS_PATIENT
from tests import factories
from tests.tre_audit.api.support import client_for
from tests.tre_audit.record_query_support import STRANGER, csv_record
from tre_audit.api.throttling import RecordQueryRateThrottle
from tre_audit.reviews.enums import Role
from tre_audit.submissions import record_queries
from tre_audit.submissions.enums import RunStatus
from tre_audit.submissions.models import AuditEntry, RecordQuery, StoredFile
from tre_audit.submissions.record_queries import record_query_execute

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def sent(monkeypatch):
    ids = []
    monkeypatch.setattr(record_queries, "_enqueue_record_query", ids.append)
    return ids


def _url(submission, query_id=None) -> str:
    base = f"{API}/requests/{submission.pk}/record-queries/"
    return base if query_id is None else f"{base}{query_id}/"


def _ask_json(client, submission, row):
    return client.post(_url(submission), json.dumps(row), content_type="application/json")


def _ask_file(client, submission, name, data):
    return client.post(_url(submission), {"record": SimpleUploadedFile(name, data)})


def test_the_author_asks_with_a_file_and_gets_a_queued_question_to_poll(
    record_audit, sent, django_capture_on_commit_callbacks
):
    submission, run = record_audit
    client = client_for(submission.author)
    with django_capture_on_commit_callbacks(execute=True):
        response = _ask_file(client, submission, "r.csv", csv_record([STRANGER]).data)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["run"], body["answer"]) == (RunStatus.QUEUED, run.id, None)
    assert body["asked_by"] == submission.author.get_username()
    assert body["input_sha256"] == csv_record([STRANGER]).sha256
    assert body["url"].endswith(_url(submission, body["id"]))
    assert sent == [body["id"]]


def test_a_checker_asks_with_a_json_body_and_reads_the_answer(record_audit, sent):
    submission, run = record_audit
    client = client_for(factories.create_user(role=Role.CHECKER))
    created = _ask_json(client, submission, FAMOUS_PATIENT)
    assert created.status_code == 201, created.json()
    record_query_execute(query=RecordQuery.objects.get(id=created.json()["id"]))
    body = client.get(_url(submission, created.json()["id"])).json()
    assert body["status"] == RunStatus.DONE
    answer = body["answer"]
    assert answer["verdict"] == "member" and answer["in_words"].startswith("Likely a member")
    assert answer["in_audit_data"] == "It is row 199 of the training set."
    assert len(answer["record_hash"]) == 16 and answer["n_shadow_models"] == 4
    lira = next(a for a in answer["attacks"] if a["name"] == "lira")
    assert set(lira) == {
        "name",
        "title",
        "membership_probability",
        "false_positive_rate",
        "meaning",
    }
    assert lira["title"] == "LiRA (online, 4 shadow models)"
    assert 0 <= lira["membership_probability"] <= 1 and 0 <= lira["false_positive_rate"] <= 1
    assert [q["id"] for q in client.get(_url(submission)).json()] == [body["id"]]
    report = client.get(f"{API}/requests/{submission.pk}/report.json").json()
    assert report["record_queries"][0]["answer"]["verdict"] == "member"


@pytest.mark.parametrize(
    "send, sentence",
    [
        (lambda c, s: _ask_json(c, s, [FAMOUS_PATIENT, FAMOUS_PATIENT]), "not a list of 2"),
        (lambda c, s: _ask_json(c, s, {**FAMOUS_PATIENT, "age": "old"}), "finite number"),
        (lambda c, s: _ask_file(c, s, "r.xlsx", b"PK"), "CSV (.csv) or JSON"),
        (lambda c, s: _ask_file(c, s, "r.json", b" " * (2**20 + 1)), "larger than the limit"),
        (lambda c, s: _ask_json(c, s, {"a": " " * 2**20}), "larger than the limit"),
        (lambda c, s: c.post(_url(s), {}), "record"),
    ],
)
def test_bad_input_is_a_400_with_one_sentence_and_nothing_stored(
    record_audit, sent, send, sentence
):
    submission, _ = record_audit
    stored, entries = StoredFile.objects.count(), AuditEntry.objects.count()
    response = send(client_for(submission.author), submission)
    assert response.status_code == 400
    assert sentence in response.json()["detail"]
    assert not RecordQuery.objects.exists()
    assert (StoredFile.objects.count(), AuditEntry.objects.count()) == (stored, entries)


def test_who_may_ask_a_member_is_refused_others_see_no_request(record_audit, sent):
    submission, _ = record_audit
    member = submission.project.members.get(username="member")
    other = factories.create_user(role=Role.RESEARCHER)
    assert _ask_json(client_for(member), submission, FAMOUS_PATIENT).status_code == 403
    assert _ask_json(client_for(other), submission, FAMOUS_PATIENT).status_code == 404
    assert _ask_json(client_for(None), submission, FAMOUS_PATIENT).status_code == 401
    assert client_for(other).get(_url(submission)).status_code == 404
    assert client_for(member).get(_url(submission)).status_code == 200
    assert client_for(member).get(_url(submission, 999)).status_code == 404
    assert not RecordQuery.objects.exists()


def test_questions_are_throttled_per_user_but_reading_answers_is_not(
    record_audit, sent, monkeypatch
):
    monkeypatch.setattr(RecordQueryRateThrottle, "THROTTLE_RATES", {"record_query": "1/hour"})
    submission, _ = record_audit
    client = client_for(submission.author)
    assert _ask_json(client, submission, FAMOUS_PATIENT).status_code == 201
    refused = _ask_json(client, submission, FAMOUS_PATIENT)
    assert refused.status_code == 429 and refused.json()["detail"].startswith("Too many requests")
    assert client.get(_url(submission)).status_code == 200
    assert RecordQuery.objects.count() == 1
