"""Two checkers claim the same request at once (SQLite and, with --postgres, PostgreSQL):
one claim wins, the other is told who has it, and the log holds one claim."""

from __future__ import annotations

import pytest

from tests import factories
from tests.tre_audit.submissions.test_concurrency import ROUNDS, together
from tre_audit.reviews.enums import Role
from tre_audit.reviews.exceptions import ReviewInvalid
from tre_audit.reviews.services import submission_claim
from tre_audit.submissions.models import AuditEntry, Submission
from tre_audit.submissions.services import audit_chain_verify

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_of_two_checkers_claiming_at_once_one_wins(round_):
    submission = factories.create_audited_submission()
    checkers = [factories.create_user(role=Role.CHECKER) for _ in range(2)]

    results = together(
        *(
            lambda c=c: submission_claim(submission=Submission.objects.get(pk=submission.pk), by=c)
            for c in checkers
        )
    )

    refusals = [r for r in results if isinstance(r, ReviewInvalid)]
    assert len(refusals) == 1 and "has been on request" in str(refusals[0])
    winner = Submission.objects.get(pk=submission.pk).claimed_by
    assert winner in checkers and f"{winner.get_username()} has been on" in str(refusals[0])
    claims = AuditEntry.objects.filter(submission=submission, action="claim")
    assert [e.actor for e in claims] == [winner]
    assert audit_chain_verify().ok
