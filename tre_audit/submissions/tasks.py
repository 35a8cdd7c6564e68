"""Celery tasks: an id in, one service call, idempotent."""

from celery import shared_task
from celery.signals import worker_ready
from redis.exceptions import RedisError


def _audit_run_execute_failure(self, exc, task_id, args, kwargs, einfo) -> None:
    """An unexpected error (after retries) marks the run AUDIT_FAILED, not stuck."""
    from tre_audit.submissions.models import AuditRun
    from tre_audit.submissions.services import audit_run_fail

    run = AuditRun.objects.filter(id=args[0]).first()
    if run is not None:
        audit_run_fail(run=run, error=f"The audit stopped unexpectedly ({type(exc).__name__}).")


@shared_task(
    name="submissions.audit_run_execute",
    acks_late=True,
    autoretry_for=(RedisError, OSError),
    retry_backoff=True,
    max_retries=3,
    on_failure=_audit_run_execute_failure,
)
def audit_run_execute(run_id: int) -> None:
    from tre_audit.submissions.models import AuditRun
    from tre_audit.submissions.services import audit_run_execute as run_audit

    run_audit(run=AuditRun.objects.get(id=run_id))


audit_run_execute_task = audit_run_execute


@worker_ready.connect
def _audit_runs_requeue(**kwargs) -> None:
    """A worker coming up resends audits submitted while the broker was down."""
    from tre_audit.submissions.services import audit_runs_requeue

    audit_runs_requeue()
