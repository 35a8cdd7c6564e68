"""What the request page offers for serving and how a partner is told to call it: only
the options that fit the model, refusals in words, the exact command and what to pin."""

import html
import shlex

import pytest
from sklearn.ensemble import RandomForestClassifier

from secure_compute import he
from secure_compute.exceptions import UnsupportedModel
from tests import factories
from tests.tre_audit.serving.helpers import approved, audited_as
from tre_audit.cli import build_parser
from tre_audit.reviews.enums import Role
from tre_audit.serving.enums import EndpointKind
from tre_audit.serving.exceptions import ServingError
from tre_audit.serving.models import Endpoint
from tre_audit.serving.selectors import endpoint_command, endpoint_kinds_offered
from tre_audit.serving.services import enclave_endpoints_stop_all, endpoint_deploy

pytestmark = pytest.mark.django_db

FOREST = {"type": "sklearn.ensemble._forest.RandomForestClassifier", "pipeline_steps": []}
LINEAR = {
    "type": "sklearn.linear_model._logistic.LogisticRegression",
    "pipeline_steps": ["standardscaler: StandardScaler", "logisticregression: LogisticRegression"],
}


def deploy_options(client, submission, user) -> str:
    client.force_login(user)
    page = client.get(submission.get_absolute_url()).content.decode()
    return page[page.index('name="kind"') - 40 : page.index("</fieldset>")]


def test_a_forest_is_offered_the_enclave_only_and_told_why(client):
    submission, author = audited_as(FOREST)
    assert endpoint_kinds_offered(submission=submission) == [EndpointKind.ENCLAVE]
    form = deploy_options(client, submission, author)
    assert 'value="he"' not in form and 'value="enclave" checked' in form
    assert "A RandomForestClassifier is not a linear model" in html.unescape(form)


def test_a_linear_pipeline_is_offered_all_three_with_he_first(client):
    submission, author = audited_as(LINEAR)
    assert endpoint_kinds_offered(submission=submission) == [
        EndpointKind.HE,
        EndpointKind.MPC,
        EndpointKind.ENCLAVE,
    ]
    form = deploy_options(client, submission, author)
    assert 'value="he" checked' in form and 'value="mpc">' in form and 'value="enclave">' in form


def test_he_for_a_forest_is_refused_in_words_before_anything_is_stored():
    submission, author = audited_as(FOREST)
    with pytest.raises(ServingError) as refused:
        endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    assert "not a linear model" in str(refused.value) and "[" not in str(refused.value)
    assert not Endpoint.objects.exists()


def test_folding_a_forest_is_refused_in_a_sentence_not_a_list(cancer):
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(*cancer)
    with pytest.raises(UnsupportedModel) as refused:
        he.linear_model_fold(forest)
    message = str(refused.value)
    assert "[" not in message and "LogisticRegression, LinearSVC" in message
    assert message.endswith("serve it in an attested enclave instead.")


@pytest.mark.parametrize("kind", [EndpointKind.HE, EndpointKind.ENCLAVE])
def test_the_commands_shown_are_ones_the_cli_takes(kind):
    endpoint = Endpoint(pk=3, kind=kind, model_sha256="ab" * 32)  # what the command reads
    command = endpoint_command(endpoint, server_url="http://tre.example:8000/")
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert (args.url, str(args.file), str(args.out)) == (
        "http://tre.example:8000",
        "rows.csv",
        "predictions.csv",
    )
    if kind == EndpointKind.HE:
        assert command.startswith("tre-audit he predict 3 -f rows.csv --keys partner.key")
    else:
        assert command.startswith("tre-audit enclave run 3 -f rows.csv --root enclave-root.pem")
        assert args.model_sha256 == "ab" * 32 and len(args.code_measurement) == 48


def test_an_enclave_row_shows_its_command_the_root_fingerprint_and_what_to_pin(
    client, enclave_dirs, linear_model_bytes
):
    submission, author = approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.ENCLAVE, by=author)
    try:
        client.force_login(author)
        page = html.unescape(client.get(submission.get_absolute_url()).content.decode())
    finally:
        enclave_endpoints_stop_all(reason="the test is over")
    command = endpoint_command(endpoint, server_url="http://testserver/")
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert command in page and args.root.name == "enclave-root.pem" and args.accept_simulated
    assert endpoint.model_sha256 in page and args.model_sha256 == endpoint.model_sha256
    assert len(args.code_measurement) == 48 and args.code_measurement.hex() in page
    assert "SHA-256 fingerprint" in page and page.count(":") > 31  # AB:CD:... of 32 bytes
    assert f"/endpoints/requests/{submission.pk}/enclave-root.pem" in page


@pytest.mark.parametrize(
    "who, code", [("author", 200), ("admin", 200), ("checker", 403), ("other", 404), (None, 302)]
)
def test_the_root_certificate_is_for_the_author_and_admins(client, enclave_dirs, who, code):
    from tre_audit.serving.services import enclave_root_directory

    enclave_root_directory()  # made on an enclave's first deploy
    submission, author = approved(b"model")
    users = {
        "author": author,
        "admin": factories.create_user(role=Role.TRE_ADMIN),
        "checker": factories.create_user(role=Role.CHECKER),
        "other": factories.create_user(role=Role.RESEARCHER),
    }
    if who is not None:
        client.force_login(users[who])
    response = client.get(f"/endpoints/requests/{submission.pk}/enclave-root.pem")
    assert response.status_code == code
    if code == 200:
        assert response.content.startswith(b"-----BEGIN CERTIFICATE-----")
        assert b"PRIVATE" not in response.content
        assert 'filename="enclave-root.pem"' in response["Content-Disposition"]
