"""Record queries: asked of a real small audit, checked on arrival, answered in a sandbox."""

import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from attacks.audit import Upload
from attacks.datasets import FAMOUS_PATIENT
from attacks.report import report_dumps
from attacks.shadows import shadow_pool_fit
from tests import factories
from tests.tre_audit.record_query_support import STRANGER, csv_record, json_record
from tre_audit.reviews.enums import Role
from tre_audit.submissions import record_queries
from tre_audit.submissions.enums import RunStatus
from tre_audit.submissions.exceptions import NotAllowed, UploadRefused
from tre_audit.submissions.models import AuditEntry, AuditShadow, RecordQuery, StoredFile
from tre_audit.submissions.record_queries import (
    record_query_create,
    record_query_execute,
    record_query_rows,
    record_query_values,
    report_with_record_queries,
)
from tre_audit.submissions.services import file_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """The query ids whose task would have been sent (nothing reaches a broker)."""
    ids = []
    monkeypatch.setattr(record_queries, "_enqueue_record_query", ids.append)
    return ids


def _ask(run, by, upload, capture):
    with capture(execute=True):
        return record_query_create(run=run, by=by, upload=upload)


def test_a_valid_record_is_stored_by_hash_logged_without_values_and_queued(
    record_audit, sent, django_capture_on_commit_callbacks
):
    submission, run = record_audit
    upload = json_record(FAMOUS_PATIENT)
    query = _ask(run, submission.author, upload, django_capture_on_commit_callbacks)
    assert (query.status, query.run, query.asked_by) == (RunStatus.QUEUED, run, submission.author)
    assert query.input_sha256 == upload.sha256 and file_path(upload.sha256).exists()
    entry = AuditEntry.objects.last()
    assert (entry.action, entry.actor, entry.submission) == (
        "record_query",
        submission.author,
        submission,
    )
    assert upload.sha256 in entry.reason and f"audit run {run.id}" in entry.reason
    assert not any(name in entry.reason for name in FAMOUS_PATIENT)
    assert sent == [query.id]


def test_a_one_row_csv_is_accepted_too(record_audit, sent, django_capture_on_commit_callbacks):
    submission, run = record_audit
    _ask(run, submission.author, csv_record([STRANGER]), django_capture_on_commit_callbacks)
    assert RecordQuery.objects.count() == 1 and len(sent) == 1


BAD = {
    "two rows": (csv_record([STRANGER, STRANGER]), "one CSV header and one row"),
    "wrong columns": (json_record({**FAMOUS_PATIENT, "height": 180}), "unknown key"),
    "a missing column": (json_record({"age": 3}), "lacks the feature"),
    "not numeric": (json_record({**FAMOUS_PATIENT, "age": "old"}), "finite number"),
    "a label outside the classes": (json_record(STRANGER | {"response": 7}), "does not know"),
    "too big": (Upload(name="r.json", data=b" " * (2**20 + 1)), "larger than"),
    "neither CSV nor JSON": (Upload(name="r.parquet", data=b"PAR1"), "CSV (.csv) or JSON"),
    "not JSON": (Upload(name="r.json", data=b"{age: 3}"), "not valid JSON"),
}


@pytest.mark.parametrize("upload, sentence", BAD.values(), ids=BAD.keys())
def test_a_bad_record_is_refused_in_one_sentence_and_nothing_is_stored(
    record_audit, sent, upload, sentence
):
    submission, run = record_audit
    stored, entries = StoredFile.objects.count(), AuditEntry.objects.count()
    with pytest.raises(UploadRefused, match=sentence.replace("(", r"\(").replace(")", r"\)")) as e:
        record_query_create(run=run, by=submission.author, upload=upload)
    assert str(e.value).endswith(".") and "\n" not in str(e.value)
    assert not RecordQuery.objects.exists() and not file_path(upload.sha256).exists()
    assert (StoredFile.objects.count(), AuditEntry.objects.count()) == (stored, entries)
    assert sent == []


@pytest.mark.parametrize(
    "who, allowed",
    [("other", False), ("member", False), ("checker", True), ("admin", True), ("author", True)],
)
def test_the_author_checkers_and_admins_may_ask_other_researchers_not(
    record_audit, sent, who, allowed
):
    submission, run = record_audit
    user = {
        "other": lambda: factories.create_user(role=Role.RESEARCHER),
        "member": lambda: submission.project.members.get(username="member"),
        "checker": lambda: factories.create_user(role=Role.CHECKER),
        "admin": lambda: factories.create_user(role=Role.TRE_ADMIN),
        "author": lambda: submission.author,
    }[who]()
    if not allowed:
        with pytest.raises(NotAllowed):
            record_query_create(run=run, by=user, upload=json_record(FAMOUS_PATIENT))
        assert not RecordQuery.objects.exists()
        return
    assert record_query_create(run=run, by=user, upload=json_record(FAMOUS_PATIENT)).pk


def test_an_unfinished_audit_cannot_be_asked(record_audit, sent):
    submission, run = record_audit
    run.status = RunStatus.RUNNING
    with pytest.raises(NotAllowed, match="finished audit"):
        record_query_create(run=run, by=submission.author, upload=json_record(FAMOUS_PATIENT))


def _answered(run, by, upload):
    query = record_query_create(run=run, by=by, upload=upload)
    return record_query_execute(query=query)


def test_a_training_row_is_answered_member_like_and_the_answer_logged(record_audit, sent):
    submission, run = record_audit
    query = _answered(run, submission.author, json_record(FAMOUS_PATIENT))
    assert query.status == RunStatus.DONE, query.error
    assert query.answer["pool_row"] == {"set": "train", "index": 199}
    assert query.answer["answer"] == "member"
    assert query.answer["shadows"] == "trained again"  # this run kept no shadows
    entry = AuditEntry.objects.last()
    assert (entry.action, entry.after, entry.actor) == ("record_query", RunStatus.DONE, None)
    assert query.answer["hash"] in entry.reason and "age" not in entry.reason
    [row] = record_query_rows(run=run)
    assert row["answer"]["in_words"].startswith("Likely a member")
    assert row["answer"]["in_audit_data"] == "It is row 199 of the training set."
    assert [a["title"] for a in row["answer"]["attacks"]][:2] == [
        "LiRA (online, 4 shadow models)",
        "RMIA (4 reference models)",
    ]


def test_a_fresh_row_gets_a_score_from_shadows_trained_again(record_audit, sent):
    submission, run = record_audit
    query = _answered(run, submission.author, csv_record([STRANGER]))
    assert query.status == RunStatus.DONE, query.error
    assert query.answer["pool_row"] is None and query.answer["label_source"] == "given"
    assert 0 <= query.answer["membership_probability"] <= 1
    assert {a["name"] for a in query.answer["attacks"]} == {"lira", "rmia", "shadow"}


def test_a_training_row_of_a_run_that_kept_its_shadows_is_answered_from_them(
    record_audit, sent, monkeypatch
):
    """A fanned-out run stored each shadow's confidences: nothing is trained again."""
    from attacks.audit import shadow_base_seed
    from tre_audit.submissions.record_queries import _run_config
    from tre_audit.submissions.services import version_uploads

    submission, run = record_audit
    target_pool = _pool_of(
        run,
        version_uploads(submission=submission, version=run.version),
        shadow_base_seed(_run_config(run)),
    )
    for k, confidences in enumerate(target_pool.confidences):
        AuditShadow.objects.create(
            run=run, index=k, confidences=confidences.astype("<f8").tobytes()
        )
    trained = _answered(run, submission.author, json_record(FAMOUS_PATIENT))
    assert trained.answer["shadows"] == "stored"
    assert trained.answer["answer"] == "member"


def _pool_of(run, uploads, base_seed):
    from attacks.audit import target_from_uploads

    target = target_from_uploads(**uploads, label="response")
    return shadow_pool_fit(target, n_shadow_models=4, random_state=base_seed, n_jobs=1)


def test_an_answered_query_is_left_alone_when_delivered_again(record_audit, sent):
    submission, run = record_audit
    query = _answered(run, submission.author, json_record(FAMOUS_PATIENT))
    entries = AuditEntry.objects.count()
    assert record_query_execute(query=query).answer == query.answer
    assert AuditEntry.objects.count() == entries


def test_a_record_the_sandbox_refuses_fails_the_query_in_one_sentence(
    record_audit, sent, monkeypatch
):
    from attacks.exceptions import AuditError

    def refuse(**kwargs):
        raise AuditError("The model failed on the data: ValueError.")

    monkeypatch.setattr(record_queries, "uploads_record_query", refuse)
    submission, run = record_audit
    query = _answered(run, submission.author, json_record(FAMOUS_PATIENT))
    assert (query.status, query.error) == (
        RunStatus.FAILED,
        "The model failed on the data: ValueError.",
    )
    assert record_query_rows(run=run)[0]["answer"] is None


def test_only_checkers_see_a_records_values_and_it_is_logged(record_audit, sent):
    submission, run = record_audit
    query = record_query_create(run=run, by=submission.author, upload=csv_record([STRANGER]))
    with pytest.raises(NotAllowed):
        record_query_values(query=query, by=submission.author)
    checker = factories.create_user(role=Role.CHECKER)
    assert record_query_values(query=query, by=checker) == STRANGER
    entry = AuditEntry.objects.last()
    assert (entry.action, entry.actor) == ("record_query:values", checker)
    assert query.input_sha256 in entry.reason


def test_the_report_download_gains_the_answers_and_the_stored_report_is_unchanged(
    record_audit, sent
):
    submission, run = record_audit
    assert report_with_record_queries(run) == report_dumps(run.report)
    stored = report_dumps(run.report)
    query = _answered(run, submission.author, json_record(FAMOUS_PATIENT))
    downloaded = json.loads(report_with_record_queries(run))
    [answer] = downloaded.pop("record_queries")
    assert answer["id"] == query.id and answer["answer"]["verdict"] == "member"
    assert answer["input_sha256"] == query.input_sha256
    run.refresh_from_db()
    assert report_dumps(run.report) == stored == report_dumps(downloaded)


def test_stored_shadows_are_used_only_when_every_one_is_there(record_audit):
    from tre_audit.submissions.record_queries import _stored_shadows

    _, run = record_audit
    AuditShadow.objects.create(run=run, index=0, confidences=np.zeros(400).tobytes())
    assert _stored_shadows(run) is None


# Pages ----------------------------------------------------------------------------------

#: A value of a queried record that must not reach the page unless a checker asks.
ODD_AGE = 47.123456


def _detail(client, submission, user):
    client.force_login(user)
    return client.get(reverse("submissions:detail", args=[submission.pk]))


def _post_record(client, submission, run, user, name, data):
    client.force_login(user)
    url = reverse("submissions:record_query_create", args=[submission.pk]) + f"?run={run.pk}"
    return client.post(url, {"record": SimpleUploadedFile(name, data)})


def test_the_author_asks_on_the_page_and_is_sent_back_to_the_section(client, record_audit, sent):
    submission, run = record_audit
    page = _detail(client, submission, submission.author).content.decode()
    assert "Ask about one record" in page and 'id="record-query-form"' in page
    response = _post_record(
        client, submission, run, submission.author, "r.json", json_record(FAMOUS_PATIENT).data
    )
    assert response.status_code == 302 and response.url.endswith("#record-queries")
    assert RecordQuery.objects.get().asked_by == submission.author


def test_a_bad_record_is_refused_at_the_field_with_one_sentence(client, record_audit, sent):
    submission, run = record_audit
    two = csv_record([STRANGER, STRANGER]).data
    response = _post_record(client, submission, run, submission.author, "r.csv", two)
    assert response.status_code == 400
    page = response.content.decode()
    field = page[page.index('id="record-query-form"') :]
    field = field[: field.index("</form>")]
    assert "one CSV header and one row, not 2 rows." in field and "errorlist" in field
    assert not RecordQuery.objects.exists()


def test_a_project_member_sees_the_answers_but_cannot_ask_and_others_see_nothing(
    client, record_audit, sent
):
    submission, run = record_audit
    member = submission.project.members.get(username="member")
    page = _detail(client, submission, member).content.decode()
    assert "Ask about one record" in page and 'id="record-query-form"' not in page
    data = json_record(FAMOUS_PATIENT).data
    assert _post_record(client, submission, run, member, "r.json", data).status_code == 403
    other = factories.create_user(role=Role.RESEARCHER)
    assert _post_record(client, submission, run, other, "r.json", data).status_code == 404
    assert not RecordQuery.objects.exists()


def test_an_answer_is_shown_in_words_by_hash_and_only_a_checker_sees_values_logged(
    client, record_audit, sent
):
    submission, run = record_audit
    query = _answered(run, submission.author, json_record({**STRANGER, "age": ODD_AGE}))
    page = _detail(client, submission, submission.author).content.decode()
    assert "Was this record in the training set?" in page
    assert query.answer["hash"] in page and str(ODD_AGE) not in page
    assert "LiRA (online, 4 shadow models)" in page and "show values" not in page
    values_url = reverse("submissions:record_query_values", args=[submission.pk, query.id])
    assert client.post(values_url, {"show_values": "1"}).status_code == 403
    checker = factories.create_user(role=Role.CHECKER)
    assert "show values" in _detail(client, submission, checker).content.decode()
    assert client.post(values_url).status_code == 302  # not ticked: nothing shown
    assert not AuditEntry.objects.filter(action="record_query:values").exists()
    shown = client.post(values_url, {"show_values": "1"})
    assert shown.status_code == 200 and str(ODD_AGE) in shown.content.decode()
    assert shown["Cache-Control"] == "no-store"
    assert AuditEntry.objects.get(action="record_query:values").actor == checker


def test_the_status_is_polled_and_the_report_download_carries_the_answer(
    client, record_audit, sent
):
    submission, run = record_audit
    query = record_query_create(run=run, by=submission.author, upload=json_record(FAMOUS_PATIENT))
    client.force_login(submission.author)
    status_url = reverse("submissions:record_query_status", args=[submission.pk, query.id])
    assert client.get(status_url).json()["status"] == RunStatus.QUEUED
    page = _detail(client, submission, submission.author).content.decode()
    assert 'data-record-query-status="queued"' in page and "record_queries.js" in page
    record_query_execute(query=query)
    assert client.get(status_url).json()["status"] == RunStatus.DONE
    download = client.get(reverse("submissions:report_json", args=[submission.pk]))
    assert [q["id"] for q in json.loads(download.content)["record_queries"]] == [query.id]


# The task ---------------------------------------------------------------------------


def test_the_task_answers_by_id_and_an_unknown_id_is_a_no_op(record_audit, sent):
    from tre_audit.submissions.tasks import record_query_execute_task

    submission, run = record_audit
    query = record_query_create(run=run, by=submission.author, upload=json_record(FAMOUS_PATIENT))
    record_query_execute_task(query.id + 1)
    record_query_execute_task(query.id)
    query.refresh_from_db()
    assert query.status == RunStatus.DONE and query.answer["answer"] == "member"


def test_an_unexpected_error_fails_the_query_with_a_sentence_not_the_value(record_audit, sent):
    from tre_audit.submissions.tasks import AuditStopped, _record_query_execute_failure

    submission, run = record_audit
    query = record_query_create(run=run, by=submission.author, upload=json_record(FAMOUS_PATIENT))
    _record_query_execute_failure(None, AuditStopped("KeyError"), "t", (query.id,), {}, None)
    query.refresh_from_db()
    assert (query.status, query.error) == (
        RunStatus.FAILED,
        "The answer stopped unexpectedly (KeyError).",
    )
    assert AuditEntry.objects.last().after == RunStatus.FAILED


def test_a_question_asked_while_the_broker_is_down_waits_and_is_sent_once(
    record_audit, monkeypatch, django_capture_on_commit_callbacks
):
    from tre_audit.submissions.record_queries import NOT_SENT, record_queries_requeue
    from tre_audit.submissions.tasks import record_query_execute_task

    submission, run = record_audit
    with factories.broker_unreachable():
        query = _ask(
            run, submission.author, json_record(FAMOUS_PATIENT), django_capture_on_commit_callbacks
        )
    query.refresh_from_db()
    assert (query.status, query.error) == (RunStatus.QUEUED, NOT_SENT)
    sent = []
    monkeypatch.setattr(record_query_execute_task, "delay", sent.append)
    assert record_queries_requeue() == 1 and record_queries_requeue() == 0
    query.refresh_from_db()
    assert sent == [query.id] and query.error == ""
