"""Serving an approved model by two-party secure inference, clicked through in Chromium.

The author of an approved breast-cancer logistic regression finds three ways to serve
it, picks secure inference (MPC), deploys it and reads the partner's two command
lines; a TRE admin finds it among the running endpoints and stops it, and its owner
and dealer hosts are gone. Each page is screenshotted at 1280 and 390 px into
test-artifacts/browser/.
"""

import pytest
import skops.io
from django.contrib.auth.models import Group
from playwright.sync_api import expect
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from secure_compute.mpc_host import host_pid_is_ours
from tests import factories
from tests.integration.conftest import PATIENCE, Screenshots, sign_in_as
from tre_audit.reviews.enums import ReleaseCondition, Role
from tre_audit.serving.enums import EndpointStatus
from tre_audit.serving.models import Endpoint
from tre_audit.serving.services import endpoint_stop, mpc_directory
from tre_audit.submissions.enums import Status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

#: Two hosts start (each loads CrypTen) before the page comes back.
DEPLOY_TIMEOUT_MS = PATIENCE * 1000


@pytest.fixture
def approved_lr(settings, tmp_path):
    """An endpoint-only approved LR by "rita", MPC folders under this test's var/."""
    settings.VAR_DIR = tmp_path / "var"
    settings.TRE_AUDIT_MPC_DEALER = ""
    settings.TRE_AUDIT_MPC_HOST = "127.0.0.1"
    for role in Role:  # a transactional test before this one may have flushed them
        Group.objects.get_or_create(name=role)
    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    submission = factories.create_audited_submission(
        Status.APPROVED,
        author=factories.create_user("rita", Role.RESEARCHER),
        risk="low",
        condition=ReleaseCondition.ENDPOINT_ONLY,
        model_bytes=skops.io.dumps(model),
    )
    run = submission.runs.get()
    run.report["model"] = {  # as the audit of this model summarises it
        "type": "sklearn.linear_model._logistic.LogisticRegression",
        "pipeline_steps": [
            "standardscaler: StandardScaler",
            "logisticregression: LogisticRegression",
        ],
    }
    run.save(update_fields=["report"])
    yield submission
    for endpoint in Endpoint.objects.filter(status=EndpointStatus.RUNNING):
        endpoint_stop(endpoint=endpoint, by=None, reason="the test ended")


def test_mpc_is_deployed_by_clicking_and_stopped_from_the_dashboard(
    approved_lr, live_server, browser_context, browser_artifacts
):
    factories.create_user("ada", Role.TRE_ADMIN)
    shot = Screenshots(browser_artifacts, prefix="mpc-deploy")
    violations: list[str] = []
    rita = sign_in_as(browser_context, "rita", violations)
    rita.goto(f"{approved_lr.get_absolute_url()}#serving")
    kinds = rita.locator("form[action*='/deploy'] input[name=kind]")
    expect(kinds).to_have_count(3)
    expect(kinds.first).to_be_checked()  # HE, the most private, first
    rita.get_by_label("Two-party secure inference (MPC, with a dealer)").check()
    shot(rita, "serving-options")
    rita.get_by_role("button", name="Deploy").click()

    endpoint_text = rita.get_by_text("endpoint #", exact=False).first
    expect(endpoint_text).to_contain_text("is running", timeout=DEPLOY_TIMEOUT_MS)
    endpoint = Endpoint.objects.get()
    commands = rita.locator("pre.command code")
    expect(commands.nth(0)).to_have_text(
        f"tre-audit mpc predict {endpoint.pk} -f rows.csv --out predictions.csv "
        f"--url {live_server.url}"
    )
    expect(commands.nth(1)).to_contain_text(f"tre-audit mpc app {endpoint.pk} --url ")
    expect(rita.get_by_text(f"/api/v1/endpoints/{endpoint.pk}/mpc/")).to_be_visible()
    shot(rita, "mpc-running")

    ada = sign_in_as(browser_context, "ada", violations)
    ada.goto("/dashboard/")
    row = ada.locator("tr", has=ada.get_by_role("button", name=f"Stop endpoint #{endpoint.pk}"))
    expect(row).to_contain_text("Two-party secure inference (CrypTen, with a dealer)")
    expect(row.get_by_role("button", name="Grant calls")).to_be_visible()
    shot(ada, "dashboard-mpc-running")
    row.get_by_role("button", name=f"Stop endpoint #{endpoint.pk}").click()
    expect(ada.get_by_text(f"Endpoint #{endpoint.pk} stopped.")).to_be_visible()
    expect(ada.get_by_text("No endpoint is running.")).to_be_visible()
    endpoint.refresh_from_db()
    tls = mpc_directory(endpoint) / "tls"
    assert endpoint.status == EndpointStatus.STOPPED
    assert not [p for p in (endpoint.pid, endpoint.dealer_pid) if host_pid_is_ours(p, tls)]
    assert violations == []
