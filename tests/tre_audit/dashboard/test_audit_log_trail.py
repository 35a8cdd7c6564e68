"""Each request page shows its own part of the audit log, in words (built through services)."""

from __future__ import annotations

import html

import pytest

from tests import factories
from tre_audit.reviews.enums import Decision
from tre_audit.reviews.selectors import TRAIL_LIMIT, audit_trail_visible_to
from tre_audit.reviews.services import review_submit
from tre_audit.submissions.models import Project
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import audit_entry_append

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return factories.create_people()


def _request(people):
    return factories.create_audited_submission(
        author=people["author"], project=Project.objects.get()
    )


def _page(client, user, submission) -> str:
    client.force_login(user)
    response = client.get(submission.get_absolute_url())
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def _reject(submission, checker):
    review_submit(
        submission=submission,
        reviewer=checker,
        run_id=current_run(submission).id,
        decision=Decision.REJECT,
        reason="Members told apart at 0.71.",
        evidence=["attack:lira"],
    )


def test_the_page_lists_this_requests_entries_only_in_words(client, people):
    mine, theirs = _request(people), _request(people)
    audit_entry_append(submission=theirs, action="comment", by=people["author"], reason="other")

    page = _page(client, people["author"], mine)

    assert "What happened to this request" in page
    assert "<strong>The service</strong> moved the request from auditing to awaiting review" in page
    assert "· other<" not in page
    trail = audit_trail_visible_to(user=people["author"], submission=mine)
    assert trail["count"] == mine.audit_entries.count() and trail["log_url"] == ""


def test_a_checker_sees_another_checkers_review_only_after_their_own(client, people):
    submission = _request(people)
    first, me = factories.create_user(role="checker"), people["checker"]
    review_submit(
        submission=submission,
        reviewer=first,
        run_id=current_run(submission).id,
        decision=Decision.APPROVE,
        reason="Judged on the attacks.",
        evidence=["attack:lira"],
    )
    before = _page(client, me, submission)
    assert f"<strong>{first.get_username()}</strong> approved" not in before

    _reject(submission, me)
    after = _page(client, me, submission)
    assert f"<strong>{first.get_username()}</strong> approved" in after
    assert f"<strong>{me.get_username()}</strong> rejected" in after
    assert "· Members told apart at 0.71.</span>" in after


def test_the_author_checkers_and_admins_see_it_a_fellow_member_does_not(client, people):
    submission = _request(people)
    for who in ("author", "checker", "admin"):
        assert "What happened to this request" in _page(client, people[who], submission), who
    assert "What happened to this request" not in _page(client, people["member"], submission)


def test_a_long_trail_is_capped_with_a_link_to_the_log_for_admins(client, people):
    submission = _request(people)
    for i in range(TRAIL_LIMIT + 5):
        audit_entry_append(
            submission=submission, action="comment", by=people["author"], reason=f"c{i}"
        )
    total = submission.audit_entries.count()

    page = _page(client, people["admin"], submission)

    assert f"The newest {TRAIL_LIMIT} of {total} entries." in page
    assert f'href="/dashboard/audit-log/?request={submission.pk}"' in page
    assert f"c{TRAIL_LIMIT + 4}" in page and "· c0<" not in page
