"""Celery tasks: an id in, one service call, idempotent."""

import logging
import threading
import time

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

from safe_model.redact import exception_summary

logger = logging.getLogger(__name__)

#: Errors worth another try: the broker or the file store blinked.
TRANSIENT = (RedisError, OSError)


class AuditStopped(Exception):
    """An unexpected error in an audit, as its type and a message stripped of data values.

    The task raises it instead of the original, so neither Celery's log of the failure
    nor the run's reason carries the record a model choked on.
    """


def _audit_run_execute_failure(self, exc, task_id, args, kwargs, einfo) -> None:
    """An unexpected error (after retries) marks the run AUDIT_FAILED, not stuck."""
    from tre_audit.submissions.models import AuditRun
    from tre_audit.submissions.services import audit_run_fail

    summary = str(exc) if isinstance(exc, AuditStopped) else exception_summary(exc)
    run = AuditRun.objects.filter(id=args[0]).first()
    if run is not None:
        audit_run_fail(run=run, error=f"The audit stopped unexpectedly ({summary}).")


@shared_task(
    bind=True,
    name="submissions.audit_run_execute",
    acks_late=True,
    ignore_result=True,  # sent from web requests: never wait on the result backend
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
    on_failure=_audit_run_execute_failure,
)
def audit_run_execute(self, run_id: int) -> None:
    from tre_audit.submissions.models import AuditRun
    from tre_audit.submissions.services import audit_run_execute as run_audit

    run = AuditRun.objects.filter(id=run_id).first()
    if run is None:
        return
    try:
        run_audit(run=run, task_id=self.request.id or "")
    except TRANSIENT:
        raise
    except Exception as exc:
        raise AuditStopped(exception_summary(exc)) from None  # no context: no raw values


audit_run_execute_task = audit_run_execute


@shared_task(
    name="submissions.audit_shadow_train",
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
)
def audit_shadow_train(run_id: int, attempt: int, index: int) -> int:
    """One shadow of a fanned-out audit (queue "shadows"); its chord counts the return.

    Anything but a transient error is stored as the shadow's failure, so the round's
    callback still runs and the pool attacks report it.
    """
    from tre_audit.submissions.models import AuditRun
    from tre_audit.submissions.services import audit_shadow_store
    from tre_audit.submissions.services import audit_shadow_train as train

    run = AuditRun.objects.filter(id=run_id).first()
    if run is None:
        return index
    try:
        train(run=run, attempt=attempt, index=index)
    except TRANSIENT:
        raise
    except Exception as exc:
        error = f"A shadow model stopped unexpectedly ({exception_summary(exc)})."
        audit_shadow_store(run=run, index=index, error=error)
    return index


audit_shadow_train_task = audit_shadow_train


@shared_task(
    name="submissions.audit_run_round",
    acks_late=True,
    ignore_result=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
    on_failure=_audit_run_execute_failure,
)
def audit_run_round(run_id: int, attempt: int, n_models: int) -> None:
    """A round's shadows have returned: measure the pool, then the next round or the report."""
    from tre_audit.submissions.models import AuditRun
    from tre_audit.submissions.services import audit_run_round as run_round

    run = AuditRun.objects.filter(id=run_id).first()
    if run is None:
        return
    try:
        run_round(run=run, attempt=attempt, n_models=n_models)
    except TRANSIENT:
        raise
    except Exception as exc:
        raise AuditStopped(exception_summary(exc)) from None  # no context: no raw values


audit_run_round_task = audit_run_round


def _record_query_execute_failure(self, exc, task_id, args, kwargs, einfo) -> None:
    """An unexpected error (after retries) fails the query with a sentence, not stuck."""
    from tre_audit.submissions.models import RecordQuery
    from tre_audit.submissions.record_queries import record_query_fail

    summary = str(exc) if isinstance(exc, AuditStopped) else exception_summary(exc)
    query = RecordQuery.objects.filter(id=args[0]).first()
    if query is not None:
        record_query_fail(query=query, error=f"The answer stopped unexpectedly ({summary}).")


@shared_task(
    name="submissions.record_query_execute",
    acks_late=True,
    ignore_result=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
    on_failure=_record_query_execute_failure,
)
def record_query_execute(query_id: int) -> None:
    """Answer one record query (the audits' queue): its shadows are trained in a sandbox."""
    from tre_audit.submissions.models import RecordQuery
    from tre_audit.submissions.record_queries import record_query_execute as answer

    query = RecordQuery.objects.filter(id=query_id).first()
    if query is None:
        return
    try:
        answer(query=query)
    except TRANSIENT:
        raise
    except Exception as exc:
        raise AuditStopped(exception_summary(exc)) from None  # no context: no raw values


record_query_execute_task = record_query_execute


@worker_ready.connect
def _audit_runs_reconcile(**kwargs) -> None:
    """A worker coming up re-queues audits whose worker stopped and resends those (and
    record queries) submitted while the broker was down; then it checks the audits
    again every half stale period (no Celery beat runs here)."""
    from tre_audit.submissions.record_queries import record_queries_requeue
    from tre_audit.submissions.services import audit_runs_reconcile

    audit_runs_reconcile()
    record_queries_requeue()
    threading.Thread(target=_reconcile_forever, name="audit-reconcile", daemon=True).start()


def _reconcile_forever() -> None:
    """Every half stale period: audits whose worker stopped, and kept uploads whose form
    never went through (a day after they were kept)."""
    from tre_audit.submissions.services import audit_runs_reconcile, stored_files_prune

    while True:
        time.sleep(settings.TRE_AUDIT_STALE_SECONDS / 2)
        try:
            audit_runs_reconcile()
            stored_files_prune(now=timezone.now())
        except Exception as exc:  # the broker or database blinked: try again next time
            logger.warning("Reconciling audit runs failed: %s", exception_summary(exc))
