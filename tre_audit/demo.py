"""Demo accounts and one demo request, so a new user sees the whole flow at once."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from attacks.audit import Upload
from attacks.datasets import write_famous_patient_example
from tre_audit.reviews.enums import Role
from tre_audit.submissions.models import Project, Submission
from tre_audit.submissions.services import Declaration, submission_create

#: One account per role (two checkers: a release needs two independent approvals).
DEMO_USERS = {
    "researcher": Role.RESEARCHER,
    "checker1": Role.CHECKER,
    "checker2": Role.CHECKER,
    "admin": Role.TRE_ADMIN,
}
DEMO_TITLE = "Famous-patient SVC (teaching example, gamma=3)"


def demo_users_ensure() -> dict[str, str]:
    """Create (or reset) the demo accounts with fresh random passwords; returns them."""
    passwords = {}
    for username, role in DEMO_USERS.items():
        user, _ = get_user_model().objects.get_or_create(
            username=username, defaults={"email": f"{username}@tre.localhost"}
        )
        passwords[username] = secrets.token_urlsafe(12)  # 16 characters: passes the validators
        user.set_password(passwords[username])
        user.save()
        user.groups.set([Group.objects.get(name=role)])
    project, _ = Project.objects.get_or_create(name="Demo project")
    project.members.add(get_user_model().objects.get(username="researcher"))
    return passwords


def demo_request_ensure() -> Submission:
    """The demo request: the teaching example's leaky SVC, submitted once."""
    author = get_user_model().objects.get(username="researcher")
    existing = Submission.objects.filter(author=author, title=DEMO_TITLE).first()
    if existing is not None:
        return existing
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_famous_patient_example(tmp, gamma=3.0)
        uploads = {
            role: Upload(name=Path(paths[role]).name, data=Path(paths[role]).read_bytes())
            for role in ("model", "train", "test")
        }
    return submission_create(
        author=author,
        title=DEMO_TITLE,
        label="response",
        project=Project.objects.get(name="Demo project"),
        declaration=Declaration(
            model_type="Support vector classifier (RBF kernel, gamma=3)",
            preprocessing="None: six categorical health features coded as integers.",
            purpose="Teaching: shows how a narrow kernel gives away a famous patient.",
            files_are_exact=True,
        ),
        **uploads,
    )
