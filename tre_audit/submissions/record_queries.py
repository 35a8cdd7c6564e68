"""Record queries: "was this record in the training set?", asked of a finished audit.

Services ask, answer and show a query; the readers below shape it for the request
page, the API and the report download. A record is checked on arrival against the
audit's report (its features, label and classes), stored by SHA-256 and answered by
a task in a sandbox (:func:`attacks.sandboxed.uploads_record_query`). The audit log
and the answer name it by hash, never by its values.
"""

from __future__ import annotations

import dataclasses
import logging

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from attacks.audit import AuditConfig, Upload
from attacks.exceptions import AuditError
from attacks.record_query import MEMBER, NOT_MEMBER, record_check, record_object
from attacks.report import report_dumps
from attacks.sandboxed import uploads_record_query
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import RunStatus
from tre_audit.submissions.exceptions import NotAllowed, SubmissionError, UploadRefused
from tre_audit.submissions.models import AuditRun, RecordQuery
from tre_audit.submissions.selectors import user_roles
from tre_audit.submissions.services import (
    _audit_config,
    audit_entry_append,
    file_read,
    file_store,
    policy_of_run,
    version_uploads,
)

logger = logging.getLogger(__name__)

#: The answer in words, for people (see attacks.record_query.record_answer).
ANSWER_WORDS = {
    MEMBER: "Likely a member: the attacks single it out as a training record.",
    NOT_MEMBER: "Likely not a member: it scores like the records the model never saw.",
}
CANNOT_TELL = "Cannot tell: it scores neither clearly like a member nor like a non-member."


def user_can_ask_record(user: AbstractBaseUser, run: AuditRun | None) -> bool:
    """The request's author, checkers and TRE admins may ask of a finished audit."""
    if run is None or run.status != RunStatus.DONE or run.report is None:
        return False
    roles = user_roles(user)
    return run.submission.author_id == user.pk or bool(roles & {Role.CHECKER, Role.TRE_ADMIN})


def user_can_show_record_values(user: AbstractBaseUser) -> bool:
    return Role.CHECKER in user_roles(user)


def record_query_create(*, run: AuditRun, by: AbstractBaseUser, upload: Upload) -> RecordQuery:
    """Check the record against the audit, store it, log who asked, and queue the answer.

    Nothing is stored when the record is refused (UploadRefused, one sentence).
    """
    if not user_can_ask_record(by, run):
        raise NotAllowed(
            "Only the request's author, a checker or a TRE admin can ask about a record, "
            "and only of a finished audit."
        )
    record_validate(run=run, upload=upload)
    with transaction.atomic():
        query = RecordQuery.objects.create(
            run=run, asked_by=by, input=file_store(data=upload.data), input_name=upload.name[:255]
        )
        audit_entry_append(
            submission=run.submission,
            action="record_query",
            by=by,
            after=RunStatus.QUEUED,
            reason=f"record query {query.id} on audit run {run.id}: record sha256 {query.input_id}",
        )
        transaction.on_commit(lambda: _enqueue_record_query(query.id))
    return query


def record_validate(*, run: AuditRun, upload: Upload) -> None:
    """UploadRefused unless ``upload`` is one record the audited model takes."""
    data, model = run.report.get("data") or {}, run.report.get("model") or {}
    if "features" not in data:
        raise SubmissionError("This audit's report does not say which features the model takes.")
    classes = sorted({c for counts in data["class_counts"].values() for c in counts})
    try:
        record_check(
            record_object(upload),
            feature_names=data["features"],
            label=data["label"],
            classes=classes,
            allow_text=bool(model.get("pipeline_steps")),
        )
    except AuditError as exc:
        raise UploadRefused(str(exc)) from None


#: Why a queued query waits: ``record_queries_requeue`` sends it when a worker starts.
NOT_SENT = "Not sent yet: the task queue was unreachable; it is sent when a worker starts."


def _enqueue_record_query(query_id: int) -> bool:
    """Send the task; with the broker down the query stays queued and says so."""
    from kombu.exceptions import OperationalError

    from tre_audit.submissions.tasks import record_query_execute_task

    try:
        record_query_execute_task.delay(query_id)
    except OperationalError:
        logger.warning("Broker unreachable: record query %s was not sent.", query_id)
        RecordQuery.objects.filter(id=query_id, status=RunStatus.QUEUED).update(error=NOT_SENT)
        return False
    return True


def record_queries_requeue() -> int:
    """Send the queries whose task never reached the broker; returns how many were sent.

    Each is claimed by a conditional update first, so two workers starting at once
    never send the same query twice.
    """
    unsent = RecordQuery.objects.filter(status=RunStatus.QUEUED, error=NOT_SENT)
    sent = 0
    for query_id in list(unsent.values_list("id", flat=True)):
        if RecordQuery.objects.filter(id=query_id, error=NOT_SENT).update(error="") == 1:
            sent += _enqueue_record_query(query_id)
    return sent


def record_query_execute(*, query: RecordQuery) -> RecordQuery:
    """Answer the query in a sandbox and log the answer; a finished query is left alone."""
    claimed = RecordQuery.objects.filter(
        Q(status=RunStatus.QUEUED) | Q(status=RunStatus.RUNNING), id=query.id
    ).update(status=RunStatus.RUNNING, error="")
    query.refresh_from_db()
    if not claimed:
        return query
    run = query.run
    try:
        answer = uploads_record_query(
            **version_uploads(submission=run.submission, version=run.version),
            label=run.submission.label,
            record=Upload(name=query.input_name, data=file_read(stored=query.input)),
            policy=policy_of_run(run=run),
            config=_run_config(run),
            n_shadow_models=run.report["reproducibility"]["n_shadow_models"],
            shadows=_stored_shadows(run),
            max_bytes=settings.TRE_AUDIT_MAX_UPLOAD_BYTES,
        )
    except AuditError as exc:
        return record_query_fail(query=query, error=str(exc))
    return _record_query_finish(query, answer)


def _run_config(run: AuditRun) -> AuditConfig:
    """The service's audit settings with the run's own seed and attacks."""
    reproduced = run.report["reproducibility"]
    return dataclasses.replace(
        _audit_config(),
        random_state=reproduced["seed"],
        attacks=tuple(reproduced["attacks"]),
        sweep=False,
    )


def _stored_shadows(run: AuditRun) -> list | None:
    """The run's stored confidences of its shadows 0..n-1, if it kept every one (fan-out)."""
    import numpy as np

    n = run.report["reproducibility"]["n_shadow_models"]
    rows = list(
        run.shadows.filter(index__lt=n, confidences__isnull=False)
        .order_by("index")
        .values_list("confidences", flat=True)
    )
    if not n or len(rows) != n:
        return None
    return [np.frombuffer(bytes(c), dtype="<f8") for c in rows]


@transaction.atomic
def _record_query_finish(query: RecordQuery, answer: dict) -> RecordQuery:
    if not _record_query_close(query, status=RunStatus.DONE, answer=answer):
        return query
    audit_entry_append(
        submission=query.run.submission,
        action="record_query",
        by=None,
        before=RunStatus.RUNNING,
        after=RunStatus.DONE,
        reason=f"record query {query.id}: {answer['answer']}, record hash {answer.get('hash')}",
    )
    return query


@transaction.atomic
def record_query_fail(*, query: RecordQuery, error: str) -> RecordQuery:
    """Mark the query failed with a sentence the asker can read (and log it)."""
    if _record_query_close(query, status=RunStatus.FAILED, error=error):
        audit_entry_append(
            submission=query.run.submission,
            action="record_query",
            by=None,
            before=RunStatus.RUNNING,
            after=RunStatus.FAILED,
            reason=f"record query {query.id}: {error}",
        )
    return query


def _record_query_close(query: RecordQuery, **fields) -> bool:
    """Finish a query once (a second delivery finds it closed); True if this one did."""
    fields["finished_at"] = timezone.now()
    open_ = Q(status=RunStatus.QUEUED) | Q(status=RunStatus.RUNNING)
    closed = RecordQuery.objects.filter(open_, id=query.id).update(**fields)
    query.refresh_from_db()
    return bool(closed)


def record_query_values(*, query: RecordQuery, by: AbstractBaseUser) -> dict:
    """The queried record's values, for a checker who asks to see them (logged)."""
    if not user_can_show_record_values(by):
        raise NotAllowed("Only output checkers can see a queried record's values.")
    values = record_object(Upload(name=query.input_name, data=file_read(stored=query.input)))
    audit_entry_append(
        submission=query.run.submission,
        action="record_query:values",
        by=by,
        reason=f"values of record query {query.id} shown (record sha256 {query.input_id})",
    )
    return values


# Readers ------------------------------------------------------------------------------


def record_query_view(query: RecordQuery) -> dict:
    """A query as people and the API read it: names and words, no internal identifiers."""
    view = {
        "id": query.id,
        "run": query.run_id,
        "status": query.status,
        "status_label": query.get_status_display(),
        "asked_by": query.asked_by.get_username(),
        "created_at": query.created_at,
        "finished_at": query.finished_at,
        "input_sha256": query.input_id,
        "error": query.error,
        "answer": None,
    }
    if query.status == RunStatus.DONE and query.answer:
        view["answer"] = answer_view(query.answer)
    return view


def answer_view(answer: dict) -> dict:
    """The stored answer in the terms the page shows: words, titles, meanings."""
    titles = answer.get("titles", {})
    attacks = [
        {
            "name": a["name"],
            "title": titles.get(a["name"], a["name"]),
            "membership_probability": a["membership_probability"],
            "false_positive_rate": a["false_positive_rate"],
            "meaning": _meaning(a),
            "shown": (f"{a['membership_probability']:.1%}", f"{a['false_positive_rate']:.1%}"),
        }
        for a in answer.get("attacks", [])
    ]
    return {
        "verdict": answer["answer"],
        "in_words": ANSWER_WORDS.get(answer["answer"], CANNOT_TELL),
        "record_hash": answer.get("hash"),
        "in_audit_data": _where(answer.get("pool_row")),
        "label_source": answer.get("label_source"),
        "strongest": titles.get(answer.get("attack"), answer.get("attack")),
        "membership_probability": answer.get("membership_probability"),
        "attacks": attacks,
        "reasons": answer.get("reasons", []),
        "errors": [
            {"title": titles.get(n, n), "error": e} for n, e in answer.get("errors", {}).items()
        ],
        "shadows": answer.get("shadows"),
        "n_shadow_models": answer.get("n_shadow_models"),
    }


def _meaning(attack: dict) -> str:
    p, fpr = attack["membership_probability"], attack["false_positive_rate"]
    return (
        f"Of the audit's records scored this high, about {p:.1%} were training records; "
        f"{fpr:.1%} of the records the model never saw score at least as high."
    )


def _where(pool_row: dict | None) -> str:
    if pool_row is None:
        return "It is not one of the audit's rows."
    where = "training set" if pool_row["set"] == "train" else "held-out set"
    return f"It is row {pool_row['index']} of the {where}."


def record_query_rows(*, run: AuditRun | None) -> list[dict]:
    """The run's queries, newest first, as :func:`record_query_view`."""
    if run is None:
        return []
    queries = run.record_queries.select_related("asked_by")
    return [record_query_view(q) for q in queries]


def report_with_record_queries(run: AuditRun) -> str:
    """report.json with the run's answered queries under ``record_queries``.

    The stored report is not changed: the key is added to the download only, and
    only when the run has answers, so a run without queries downloads the same bytes.
    """
    done = run.record_queries.filter(status=RunStatus.DONE).order_by("id")
    answers = [
        {"id": q.id, "asked_at": q.created_at.isoformat(), "input_sha256": q.input_id}
        | {"answer": answer_view(q.answer)}
        for q in done
    ]
    if not answers:
        return report_dumps(run.report)
    return report_dumps(run.report | {"record_queries": answers})
