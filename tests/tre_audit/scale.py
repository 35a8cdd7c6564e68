"""Lists at TRE scale, built fast: hundreds of requests and thousands of audit entries.

The list pages read only the rows made here (a request's status, author, project,
dates and claim; its runs' status and risk; the entries themselves), never state that
only a service writes, so ``bulk_create`` stands in for the services. The audit
entries form a valid chain (each hashed as ``audit_entry_append`` would), so the log
verifies and the export's chain line can be checked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from attacks.verdict import RISKS
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditChainHead, AuditEntry, AuditRun, Submission
from tre_audit.submissions.services import CHAIN_HEAD, GENESIS_HASH, audit_entry_hash

#: The first request's day; request i is updated ``i % DAYS`` days later.
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
DAYS = 10
#: The statuses the bulk requests cycle through.
STATUSES = (Status.AWAITING_REVIEW, Status.APPROVED, Status.SUBMITTED, Status.REJECTED)


def bulk_requests(n: int, *, authors: list, projects: list) -> list[Submission]:
    """``n`` requests: status, author, project and (for audited ones) risk cycle by index;
    request i is titled "Model i" (every 7th "Readmission model i") and is updated
    on day ``i % DAYS``."""
    submissions = Submission.objects.bulk_create(
        Submission(
            title=f"Readmission model {i}" if i % 7 == 0 else f"Model {i}",
            author=authors[i % len(authors)],
            project=projects[i % len(projects)],
            status=STATUSES[i % len(STATUSES)],
            files_are_exact=True,
        )
        for i in range(n)
    )
    AuditRun.objects.bulk_create(
        AuditRun(
            submission=s,
            status=RunStatus.DONE,
            progress=1.0,
            report={"verdict": {"risk": RISKS[i % 3], "reasons": []}},
            risk=RISKS[i % 3],
        )
        for i, s in enumerate(submissions)
        if s.status != Status.SUBMITTED
    )
    ids = [s.pk for s in submissions]
    for day in range(DAYS):  # one UPDATE per day: auto_now stamped them all "now"
        Submission.objects.filter(pk__in=ids[day::DAYS]).update(
            updated_at=T0 + timedelta(days=day), created_at=T0
        )
    return list(Submission.objects.filter(pk__in=ids).order_by("pk"))


def bulk_entries(n: int, *, submissions: list, actors: list) -> list[AuditEntry]:
    """``n`` entries chained after the log's newest, one a minute from ``T0``, cycling
    through ``submissions`` and ``actors``; the chain head is moved to the last."""
    head = AuditChainHead.objects.filter(pk=CHAIN_HEAD).first()
    prev = head.entry_hash if head else GENESIS_HASH
    entries = []
    for i in range(n):
        entry = AuditEntry(
            submission=submissions[i % len(submissions)],
            actor=actors[i % len(actors)],
            action="comment" if i % 5 else "status",
            before="" if i % 5 else Status.AUDITING,
            after="" if i % 5 else Status.AWAITING_REVIEW,
            reason=f"entry {i}",
            created_at=T0 + timedelta(minutes=i),
            prev_hash=prev,
        )
        entry.entry_hash = prev = audit_entry_hash(entry)
        entries.append(entry)
    AuditEntry.objects.bulk_create(entries, batch_size=1000)
    last = AuditEntry.objects.order_by("-id").first()
    AuditChainHead.objects.update_or_create(
        pk=CHAIN_HEAD, defaults={"entry_id": last.id, "entry_hash": last.entry_hash}
    )
    return entries
