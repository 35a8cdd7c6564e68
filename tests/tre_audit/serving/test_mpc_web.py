"""Two-party secure inference (MPC) from the web: offered on the request page for the
models it can serve (decided from the audit's report, by name), deployed from the page
with the partner's command lines, listed on the dashboard; and an ONNX network really
audited, then served and called through the partner's client."""

import html
import io
import shlex

import numpy as np
import pandas as pd
import pytest
from knox.models import AuthToken

from attacks.nn.schema import parse_declaration
from attacks.nn.teaching import DECLARATIONS
from attacks.policy import default_policy_text
from secure_compute import mpc_client
from secure_compute.mpc_host import host_pid_is_ours
from tests import factories
from tests.nn_support import MLP_LABEL
from tests.tre_audit.serving.helpers import approve, approved, audited_as
from tre_audit.cli import build_parser
from tre_audit.reviews.enums import Role
from tre_audit.serving.enums import EndpointKind, EndpointStatus
from tre_audit.serving.models import Endpoint
from tre_audit.serving.selectors import endpoint_kinds_offered
from tre_audit.serving.services import (
    endpoint_caller_grant,
    endpoint_deploy,
    endpoint_stop,
    mpc_directory,
)
from tre_audit.submissions.services import (
    audit_run_execute,
    policy_version_create,
    submission_create,
)

LINEAR = {
    "type": "sklearn.linear_model._logistic.LogisticRegression",
    "pipeline_steps": ["standardscaler: StandardScaler", "logisticregression: LogisticRegression"],
    "params": {"C": 1.0},
}
MLP = {
    "type": "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "pipeline_steps": ["standardscaler: StandardScaler", "mlpclassifier: MLPClassifier"],
    "params": {"activation": "relu", "hidden_layer_sizes": [16]},
}
TANH_MLP = {**MLP, "params": {"activation": "tanh", "hidden_layer_sizes": [16]}}
FOREST = {
    "type": "sklearn.ensemble._forest.RandomForestClassifier",
    "pipeline_steps": [],
    "params": {"n_estimators": 100},
}


def _network(case: str, n_classes: int) -> dict:
    """An ONNX network's summary as the audit writes it: its validated declaration."""
    declaration = parse_declaration(DECLARATIONS[case], n_classes=n_classes).to_dict()
    return {
        "type": "safe_model.onnx_model.OnnxClassifier",
        "pipeline_steps": [],
        "params": {"output": "logits"},
        "classes": list(range(n_classes)),
        "declaration": declaration,
    }


CNN = _network("digits_cnn_overfit", 10)
ONNX_MLP = _network("breast_cancer_mlp", 2)


def _deploy_form(client, submission, user) -> str:
    client.force_login(user)
    page = client.get(submission.get_absolute_url()).content.decode()
    start = page.index('action="/endpoints/requests/')
    return html.unescape(page[start : page.index("</form>", start)])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("summary", "offered", "why"),
    [
        (LINEAR, [EndpointKind.HE, EndpointKind.MPC, EndpointKind.ENCLAVE], ""),
        (MLP, [EndpointKind.MPC, EndpointKind.ENCLAVE], ""),
        (ONNX_MLP, [EndpointKind.MPC, EndpointKind.ENCLAVE], ""),
        (FOREST, [EndpointKind.ENCLAVE], "A RandomForestClassifier cannot be served by two-party"),
        (CNN, [EndpointKind.ENCLAVE], "A network with Conv2d and MaxPool2d layers cannot be"),
        (TANH_MLP, [EndpointKind.ENCLAVE], "An MLPClassifier with activation='tanh' cannot be"),
    ],
    ids=["linear", "mlp", "onnx-mlp", "forest", "cnn", "tanh-mlp"],
)
def test_the_page_offers_mpc_for_linear_models_and_relu_networks_only(
    client, summary, offered, why
):
    submission, author = audited_as(summary)
    assert endpoint_kinds_offered(submission=submission) == offered
    form = _deploy_form(client, submission, author)
    assert ('value="mpc"' in form) == (EndpointKind.MPC in offered)
    assert f'value="{offered[0]}" checked' in form  # the most private option it can have
    if EndpointKind.MPC in offered:
        assert "Two-party secure inference (MPC, with a dealer)" in form
        assert "two-party secure inference" not in form  # no refusal beside the offer
    else:
        assert why in form and "serve it in an attested enclave instead." in form


def _hosts(endpoint) -> list[int]:
    tls = mpc_directory(endpoint) / "tls"
    return [p for p in (endpoint.pid, endpoint.dealer_pid) if p and host_pid_is_ours(p, tls)]


@pytest.mark.django_db
def test_mpc_deployed_from_the_page_shows_the_partners_commands_and_the_dashboard_stops_it(
    client, mpc_var, linear_model_bytes
):
    submission, author = approved(linear_model_bytes[0])
    client.force_login(author)
    response = client.post(f"/endpoints/requests/{submission.pk}/deploy/", {"kind": "mpc"})
    assert response.status_code == 302 and response["Location"].endswith("#serving")
    endpoint = Endpoint.objects.get()
    try:
        assert endpoint.kind == EndpointKind.MPC and endpoint.status == EndpointStatus.RUNNING
        assert len(_hosts(endpoint)) == 2  # the owner's host and the dealer
        page = html.unescape(client.get(response["Location"]).content.decode())
        kind = "Two-party secure inference (CrypTen, with a dealer)"
        assert f"{kind} endpoint #{endpoint.pk} is running." in page
        assert f"/api/v1/endpoints/{endpoint.pk}/mpc/" in page
        predict = (
            f"tre-audit mpc predict {endpoint.pk} -f rows.csv --out predictions.csv "
            "--url http://testserver"
        )
        app = f"tre-audit mpc app {endpoint.pk} --url http://testserver"
        assert predict in page and app in page
        for command in (predict, app):  # ones the CLI takes, for this endpoint
            args = build_parser().parse_args(shlex.split(command)[1:])
            assert (args.mpc_command, args.endpoint) == (command.split()[2], endpoint.pk)

        client.force_login(factories.create_user(role=Role.TRE_ADMIN))
        dashboard = html.unescape(client.get("/dashboard/").content.decode())
        listed = dashboard[dashboard.index("Secure endpoints running") :]
        assert "Two-party secure inference (CrypTen, with a dealer)" in listed
        assert f'action="/endpoints/{endpoint.pk}/callers/"' in listed
        assert f"Stop endpoint #{endpoint.pk}" in listed
        stop = client.post(f"/endpoints/{endpoint.pk}/stop/", {"next": "/dashboard/"})
        assert stop.status_code == 302 and stop["Location"] == "/dashboard/"
    finally:
        endpoint.refresh_from_db()
        if endpoint.status == EndpointStatus.RUNNING:
            endpoint_stop(endpoint=endpoint, by=None, reason="the test failed")
    assert endpoint.status == EndpointStatus.STOPPED and not _hosts(endpoint)
    assert "No endpoint is running." in client.get("/dashboard/").content.decode()


#: One round of two shadows: the network's audit in seconds.
TWO_SHADOWS = (
    default_policy_text()
    .replace("min_shadow_models = 4", "min_shadow_models = 2")
    .replace("max_shadow_models = 64", "max_shadow_models = 2")
)


@pytest.mark.django_db(transaction=True)
def test_an_audited_onnx_mlp_is_served_by_mpc_with_the_networks_own_decisions(
    live_server, mpc_var, mlp_files, enqueued
):
    """The fold takes the classes and output from the audit's report, as the audit loaded
    the network: the partner's decisions are the ONNX model's own, labels and all."""
    from safe_model.loader import load_model

    admin = factories.create_user(role=Role.TRE_ADMIN)
    policy_version_create(text=TWO_SHADOWS, note="two shadows for this test", by=admin)
    mpc_var.TRE_AUDIT_JOBS = 1
    mpc_var.TRE_AUDIT_SWEEP = False
    submission = submission_create(
        author=factories.create_user(role=Role.RESEARCHER),
        title="Breast-cancer MLP",
        label=MLP_LABEL,
        declaration=factories.EXACT,
        model=mlp_files["model"],
        architecture=mlp_files["declaration"],
        train=mlp_files["train"],
        test=mlp_files["test"],
    )
    run = audit_run_execute(run=submission.runs.get())
    assert run.report["model"]["declaration"]["output"] == "logits", run.error
    assert endpoint_kinds_offered(submission=submission) != [EndpointKind.ENCLAVE]
    approve(submission)
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.MPC, by=submission.author)
    try:
        partner = factories.create_user(role=Role.RESEARCHER)
        endpoint_caller_grant(endpoint=endpoint, caller=partner, by=admin, reason="Study 12.")
        token = AuthToken.objects.create(user=partner)[1]
        table = pd.read_csv(io.BytesIO(mlp_files["test"].data))
        features, labels = table.drop(columns=MLP_LABEL), table[MLP_LABEL]
        X = features.to_numpy(dtype=np.float32)[:40]
        prediction = mpc_client.predict(live_server.url, token, endpoint.pk, X)
    finally:
        endpoint_stop(endpoint=endpoint, by=None, reason="the test ended")
    network = load_model(
        mlp_files["model"].data, filename="model.onnx", labels=labels, output="logits"
    )
    assert prediction.predictions.tolist() == network.predict(X).tolist()
    assert set(prediction.predictions.tolist()) == set(labels.tolist())  # both classes, as named
    assert not _hosts(endpoint)
