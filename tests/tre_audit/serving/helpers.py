"""Requests and policies the serving tests need, built through the services."""

from attacks.policy import default_policy_text
from tests import factories
from tre_audit.reviews.enums import ReleaseCondition, Role
from tre_audit.submissions.enums import Status
from tre_audit.submissions.services import policy_version_create


def approved(model_bytes, condition=ReleaseCondition.ENDPOINT_ONLY, risk="low"):
    """An approved request (through two real reviews) serving ``model_bytes``, and its author."""
    author = factories.create_user(role=Role.RESEARCHER)
    submission = factories.create_audited_submission(
        Status.APPROVED, author=author, risk=risk, condition=condition, model_bytes=model_bytes
    )
    return submission, author


def budget_set(*, max_calls: int = 200, max_rows: int = 1_000_000) -> None:
    """A TRE admin saves a policy version with this [serving] budget."""
    text = (
        default_policy_text()
        .replace("max_calls_per_day = 200", f"max_calls_per_day = {max_calls}")
        .replace("max_rows_per_day = 1000000", f"max_rows_per_day = {max_rows}")
    )
    admin = factories.create_user(role=Role.TRE_ADMIN)
    policy_version_create(text=text, note="A budget for this test.", by=admin)
