"""The partner's and the deployer's CLI against a live server: `tre-audit he ...` and
`tre-audit enclave deploy|encrypt|run`, with a real enclave host process."""

import csv
import tempfile
from pathlib import Path

import numpy as np
import pytest
import skops.io
from knox.models import AuthToken
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from secure_compute.attestation import ROOT_CERT_FILE
from tests import factories
from tests.tre_audit.serving.helpers import budget_set
from tre_audit.cli import main
from tre_audit.reviews.enums import ReleaseCondition, Role
from tre_audit.serving.models import Endpoint
from tre_audit.serving.services import endpoint_stop
from tre_audit.submissions.enums import Status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def cancer():
    frame = load_breast_cancer(as_frame=True).frame.sample(120, random_state=0)
    X, y = frame.drop(columns="target"), frame["target"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    return X, model


@pytest.fixture
def served(settings, cancer, tmp_path, live_server):
    """An endpoint-only approved request, its author's token, a CSV of rows."""
    X, model = cancer
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        settings.TRE_AUDIT_ENCLAVE_SOCKETS = Path(short) / "s"
        settings.TRE_AUDIT_ENCLAVE_ROOT = Path(short) / "root"
        author = factories.create_user(role=Role.RESEARCHER)
        submission = factories.create_audited_submission(
            Status.APPROVED,
            author=author,
            risk="low",
            condition=ReleaseCondition.ENDPOINT_ONLY,
            model_bytes=skops.io.dumps(model),
        )
        run = submission.runs.get()
        run.report["data"] = {"features": list(X.columns)}  # as the audit of this model records
        run.save(update_fields=["report"])
        rows = tmp_path / "rows.csv"
        X.to_csv(rows, index=False)
        server = ["--url", live_server.url, "--token", AuthToken.objects.create(user=author)[1]]
        yield {"submission": submission, "server": server, "rows": rows, "short": Path(short)}
        for endpoint in Endpoint.objects.all():
            endpoint_stop(endpoint=endpoint, by=author)


def _predictions(path: Path) -> np.ndarray:
    with path.open() as handle:
        return np.array([int(row["prediction"]) for row in csv.DictReader(handle)])


def test_he_deploy_keygen_predict(served, cancer, tmp_path, capsys):
    X, model = cancer
    assert main(["he", "deploy", str(served["submission"].pk), *served["server"]]) == 0
    endpoint = Endpoint.objects.get()
    keys = tmp_path / "partner.key"
    assert main(["he", "keygen", str(keys)]) == 0
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    out = tmp_path / "he.csv"
    args = ["he", "predict", str(endpoint.pk), "-f", str(served["rows"]), "--keys", str(keys)]
    assert main([*args, "--out", str(out), *served["server"]]) == 0
    assert np.array_equal(_predictions(out), model.predict(X))


def test_enclave_deploy_encrypt_run(served, cancer, tmp_path, capsys):
    X, model = cancer
    assert main(["enclave", "deploy", str(served["submission"].pk), *served["server"]]) == 0
    assert "SIMULATED" in capsys.readouterr().out
    endpoint = Endpoint.objects.get()
    root = served["short"] / "root" / ROOT_CERT_FILE
    partner = [str(endpoint.pk), "--root", str(root), *served["server"]]
    refused = main(["enclave", "run", *partner, "-f", str(served["rows"])])
    error = capsys.readouterr().err.strip()
    assert refused == 2 and "SIMULATED" in error.upper() and "\n" not in error
    sealed = tmp_path / "sealed"
    args = ["enclave", "encrypt", *partner, "-f", str(served["rows"]), "--accept-simulated"]
    assert main([*args, "-o", str(sealed)]) == 0
    assert oct((sealed / "request.key").stat().st_mode & 0o777) == "0o600"
    assert str(X.iloc[0, 0]).encode() not in (sealed / "request.sealed").read_bytes()
    out = tmp_path / "enclave.csv"
    assert main(["enclave", "run", *partner, "--sealed", str(sealed), "--out", str(out)]) == 0
    assert np.array_equal(_predictions(out), model.predict(X))
    wrong = ["--model-sha256", "0" * 64, "--accept-simulated", "-f", str(served["rows"])]
    assert main(["enclave", "run", *partner, *wrong]) == 2
    assert "model" in capsys.readouterr().err.lower()


def test_deploying_a_request_that_is_not_approved_exits_2(served, capsys, live_server):
    author = served["submission"].author
    waiting = factories.create_audited_submission(Status.AWAITING_REVIEW, author=author)
    assert main(["he", "deploy", str(waiting.pk), *served["server"]]) == 2
    assert "approved" in capsys.readouterr().err
    assert not Endpoint.objects.exists()


def test_a_spent_budget_prints_its_sentence_and_exits_2(served, tmp_path, capsys):
    budget_set(max_calls=1)
    assert main(["he", "deploy", str(served["submission"].pk), *served["server"]]) == 0
    endpoint = Endpoint.objects.get()
    keys = tmp_path / "partner.key"
    assert main(["he", "keygen", str(keys)]) == 0
    args = ["he", "predict", str(endpoint.pk), "-f", str(served["rows"]), "--keys", str(keys)]
    assert main([*args, "--out", str(tmp_path / "first.csv"), *served["server"]]) == 0
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "second.csv"), *served["server"]]) == 2
    error = capsys.readouterr().err.strip()
    assert "Your 1 calls to this model for today are spent." in error and "\n" not in error
    assert not (tmp_path / "second.csv").exists()


def test_only_an_admin_names_callers_at_deploy(served, capsys):
    partner = factories.create_user(role=Role.RESEARCHER)
    deploy = ["he", "deploy", str(served["submission"].pk), "--caller", partner.username]
    assert main([*deploy, *served["server"]]) == 2
    assert "Only a TRE admin" in capsys.readouterr().err
    assert not Endpoint.objects.exists()
    admin = factories.create_user(role=Role.TRE_ADMIN)
    as_admin = ["--url", served["server"][1], "--token", AuthToken.objects.create(user=admin)[1]]
    assert main([*deploy, "--reason", "Study 4 partner.", *as_admin]) == 0
    assert list(Endpoint.objects.get().callers.all()) == [partner]


def test_mpc_deploy_and_predict_by_column_name_and_a_missing_column_exits_2(
    served, cancer, tmp_path, settings, capsys
):
    settings.VAR_DIR, settings.TRE_AUDIT_MPC_DEALER = tmp_path / "var", ""
    X, model = cancer
    assert main(["mpc", "deploy", str(served["submission"].pk), *served["server"]]) == 0
    endpoint = Endpoint.objects.get()
    shuffled, out = tmp_path / "shuffled.csv", tmp_path / "mpc.csv"
    X[list(reversed(X.columns))].to_csv(shuffled, index=False)  # chosen by name, not place
    args = ["mpc", "predict", str(endpoint.pk), "-f", str(shuffled), *served["server"]]
    assert main([*args, "--out", str(out)]) == 0
    with out.open() as handle:
        assert next(csv.reader(handle)) == ["prediction", "logit", "error_bound"]
    assert np.array_equal(_predictions(out), model.predict(X))
    assert "largest logit error bound" in capsys.readouterr().err
    missing = tmp_path / "missing.csv"
    X.drop(columns=[X.columns[3]]).to_csv(missing, index=False)
    args[4] = str(missing)
    assert main([*args, "--out", str(tmp_path / "never.csv")]) == 2
    error = capsys.readouterr().err.strip()
    assert X.columns[3] in error and "\n" not in error
    assert not (tmp_path / "never.csv").exists()


def test_mpc_app_is_wired_to_the_service_s_endpoint(
    served, cancer, tmp_path, settings, monkeypatch
):
    """``tre-audit mpc app`` serves the endpoint's public model and predicts through the
    service (its HTTP loop is driven in Chromium in tests/integration/test_browser_mpc_app.py)."""
    from tre_audit import mpc_app

    settings.VAR_DIR, settings.TRE_AUDIT_MPC_DEALER = tmp_path / "var", ""
    X, model = cancer
    assert main(["mpc", "deploy", str(served["submission"].pk), *served["server"]]) == 0
    endpoint = Endpoint.objects.get()
    served_app = {}

    def serve(architecture, predict, *, endpoint, port, ready):
        rows = X[list(architecture.feature_names)].to_numpy()[:3]
        served_app.update(architecture=architecture, endpoint=endpoint, prediction=predict(rows))
        ready(f"http://127.0.0.1:{port}/")

    monkeypatch.setattr(mpc_app, "app_serve", serve)
    assert main(["mpc", "app", str(endpoint.pk), "--port", "5123", *served["server"]]) == 0
    assert served_app["endpoint"] == str(endpoint.pk)
    assert served_app["architecture"].n_features == X.shape[1]
    assert (served_app["prediction"].predictions == model.predict(X.iloc[:3])).all()
