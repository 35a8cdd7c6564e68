"""Requests and policies the serving tests need, built through the services."""

from attacks.policy import default_policy_text
from tests import factories
from tre_audit.reviews.enums import Decision, ReleaseCondition, Role
from tre_audit.reviews.services import finding_sources, review_submit
from tre_audit.submissions.enums import Status
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import policy_version_create


def approved(model_bytes, condition=ReleaseCondition.ENDPOINT_ONLY, risk="low"):
    """An approved request (through two real reviews) serving ``model_bytes``, and its author."""
    author = factories.create_user(role=Role.RESEARCHER)
    submission = factories.create_audited_submission(
        Status.APPROVED, author=author, risk=risk, condition=condition, model_bytes=model_bytes
    )
    return submission, author


def audited_as(model_summary: dict, model_bytes: bytes = b"model"):
    """An approved request whose audit's report names its model as ``model_summary``
    (the audit writes this summary; the factory's report has none)."""
    submission, author = approved(model_bytes)
    run = current_run(submission)
    run.report = {**run.report, "model": model_summary}
    run.save(update_fields=["report"])
    return submission, author


def approve(submission, condition=ReleaseCondition.ENDPOINT_ONLY) -> None:
    """Two checkers approve the request's audited version, citing its report's findings."""
    run = current_run(submission)
    for _ in range(2):
        review_submit(
            submission=submission,
            run_id=run.id,
            reviewer=factories.create_user(role=Role.CHECKER),
            decision=Decision.APPROVE,
            reason="Judged on the attacks.",
            evidence=finding_sources(run)[:2],
            justification="Served behind the endpoint." if run.risk == "high" else "",
            condition=condition,
        )
    submission.refresh_from_db()
    assert submission.status == Status.APPROVED, submission.status


def budget_set(*, max_calls: int = 200, max_rows: int = 1_000_000) -> None:
    """A TRE admin saves a policy version with this [serving] budget."""
    text = (
        default_policy_text()
        .replace("max_calls_per_day = 200", f"max_calls_per_day = {max_calls}")
        .replace("max_rows_per_day = 1000000", f"max_rows_per_day = {max_rows}")
    )
    admin = factories.create_user(role=Role.TRE_ADMIN)
    policy_version_create(text=text, note="A budget for this test.", by=admin)
