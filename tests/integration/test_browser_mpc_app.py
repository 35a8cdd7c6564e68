"""The partner's local secure-inference app in headless Chromium, on a real session.

Real dealer and owner hosts serve a breast-cancer logistic regression; the app's
``predict`` issues a partner certificate per call and runs the partner's side
(:func:`secure_compute.mpc_host.partner_predict`). The partner opens the app,
has a CSV with a text cell refused in one sentence, picks five rows, sees their
shares, starts secure inference, gets the plaintext model's five predictions and
downloads predictions.csv; a POST without the form token is refused with 403.
Each page is screenshotted at 1280 and 390 px into test-artifacts/browser/.
"""

import csv
import io
import itertools
import subprocess
import threading

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import expect
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from secure_compute import mpc, mpc_host, mpc_transport
from tests.integration.conftest import PATIENCE, Screenshots
from tre_audit import mpc_app

pytestmark = pytest.mark.slow

ENDPOINT = "7"
N_ROWS = 5


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A fitted LR, its folded model, and a real dealer and owner host serving it."""
    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    estimator.fit(X[:381], y[:381])
    model = mpc.model_fold(estimator)
    root = tmp_path_factory.mktemp("mpc")
    tls, model_dir = root / "tls", root / "model"
    ca = mpc_transport.ca_create(endpoint=ENDPOINT)
    for role in ("owner", "dealer"):
        identity = mpc_transport.identity_issue(ca, role=role, endpoint=ENDPOINT)
        mpc_transport.identity_save(identity, tls, role)
    (tls / "ca.pem").write_bytes(ca.cert_pem)
    mpc_host.weights_save(model, model_dir)
    hosts = []
    try:
        dealer = _host_start(hosts, "dealer", tls_dir=tls, root=root)
        owner = _host_start(
            hosts,
            "owner",
            tls_dir=tls,
            root=root,
            model_dir=model_dir,
            dealer=f"127.0.0.1:{dealer}",
        )
        yield {
            "estimator": estimator,
            "model": model,
            "X": X[381:],
            "ca": ca,
            "ports": (owner, dealer),
        }
    finally:
        for host in hosts:
            host.terminate()
        for host in hosts:
            host.wait(timeout=60)


def _host_start(hosts: list, role: str, *, tls_dir, root, **options) -> int:
    """Start a host; its port once it prints ``ready <port>``, or why it did not."""
    log = root / f"{role}.log"
    command = mpc_host.host_command(
        role, tls_dir=tls_dir, endpoint=ENDPOINT, listen_at="127.0.0.1:0", **options
    )
    host = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        env=mpc_host.host_environment(),
        start_new_session=True,
    )
    hosts.append(host)
    line = host.stdout.readline().split()  # the host exits (EOF) rather than hang on an error
    assert line[:1] == [b"ready"], f"the {role} host did not start: {line}\n{log.read_text()}"
    return int(line[1])


@pytest.fixture
def app_url(served):
    """The app, served from a thread, predicting through a real partner session per call."""
    sessions = itertools.count()
    owner, dealer = served["ports"]

    def predict(X):
        key, csr = mpc_transport.csr_create()
        session = f"app{next(sessions)}"  # alphanumeric, as the owner host requires
        cert = mpc_transport.csr_sign(
            served["ca"], csr, endpoint=ENDPOINT, session=session, rows=len(X)
        )
        ticket = mpc_host.SessionTicket(
            ENDPOINT,
            session,
            ("127.0.0.1", owner),
            ("127.0.0.1", dealer),
            served["ca"].cert_pem,
            mpc_transport.Identity(cert, key),
            served["model"].architecture,
        )
        return mpc_host.partner_predict(ticket, X, timeout=PATIENCE)

    server = mpc_app.app_server(served["model"].architecture, predict, endpoint=ENDPOINT)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def test_a_partner_picks_rows_sees_their_shares_and_gets_the_plaintext_predictions(
    served, app_url, chromium, browser_artifacts
):
    rows = served["X"].iloc[:N_ROWS]
    shot = Screenshots(browser_artifacts, prefix="mpc-app")
    context = chromium.new_context(
        base_url=app_url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(PATIENCE * 1000)
    violations: list[str] = []
    page = context.new_page()
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    try:
        page.goto("/")
        model = page.locator("#model-h").locator("..")
        expect(model).to_contain_text("30 features")
        expect(model).to_contain_text("Dense: 30 → 1")
        expect(page.get_by_text("CSV only: a model on images")).to_be_visible()
        shot(page, "choose")

        _refused_text_cell(page, rows, shot)
        _shares(page, rows, shot)
        page.get_by_role("button", name="Start secure inference").click()
        expect(page.get_by_role("heading", name=f"Predictions for {N_ROWS} rows")).to_be_visible()
        _results(page, served, rows, shot, browser_artifacts)
        assert violations == []
    finally:
        context.close()


def _refused_text_cell(page, rows: pd.DataFrame, shot) -> None:
    bad = rows.astype(object)
    bad.iloc[2, 4] = "high"  # pandas reads "n/a" and "NA" as missing, a sentence of its own
    page.set_input_files("#rows", {"name": "bad.csv", "mimeType": "text/csv", "buffer": _csv(bad)})
    page.get_by_role("button", name="Show the shares").click()
    column = rows.columns[4]
    expect(page.locator("#error")).to_have_text(
        f"Column '{column}' holds a value that is not a number (row 3)."
    )
    assert "Traceback" not in page.content()
    shot(page, "refused-text-cell")


def _shares(page, rows: pd.DataFrame, shot) -> None:
    page.set_input_files(
        "#rows", {"name": "five.csv", "mimeType": "text/csv", "buffer": _csv(rows)}
    )
    page.get_by_role("button", name="Show the shares").click()
    expect(page.get_by_role("heading", name="Your rows, secret-shared")).to_be_visible()
    expect(page.locator(".lead")).to_contain_text(f"{N_ROWS} rows")
    first = page.locator("#shares-row-1 tbody tr").first
    cells = [int(first.locator("td").nth(j).inner_text()) for j in (1, 2, 3)]
    encoded, mask, masked = cells
    value = rows.iloc[0, 0]
    assert encoded == int(np.trunc(value * 2**mpc.PRECISION_BITS))
    assert (mask + masked - encoded) % 2**64 == 0, "the two shares add up to the fixed-point value"
    assert mask != encoded and masked != encoded
    expect(page.locator("table.shares")).to_have_count(mpc_app.PREVIEW_ROWS)
    shot(page, "shares")


def _results(page, served, rows: pd.DataFrame, shot, artifacts) -> None:
    expected = served["estimator"].predict(rows)
    logits = mpc.plaintext_logits(served["model"], rows.to_numpy())
    table = page.locator("#predictions tbody tr")
    expect(table).to_have_count(N_ROWS)
    shown = [table.nth(i).locator("td").nth(1).inner_text() for i in range(N_ROWS)]
    assert shown == [str(v) for v in expected]
    for unit in ("#bytes-sent", "#bytes-received"):
        expect(page.locator(unit)).to_contain_text("kB")
    assert int(page.locator("#rounds").inner_text().replace(",", "")) > 0
    shot(page, "predictions")
    with page.expect_download() as waiting:
        page.get_by_role("link", name="Download predictions.csv").click()
    download = waiting.value
    assert download.suggested_filename == "predictions.csv"
    path = artifacts / "mpc-app-predictions.csv"
    download.save_as(path)
    written = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [int(r["prediction"]) for r in written] == expected.tolist()
    bounds = np.array([float(r["error_bound"]) for r in written])
    assert (np.abs(np.array([float(r["logit_0"]) for r in written]) - logits[:, 0]) <= bounds).all()

    token = page.locator("input[name=csrf]")
    assert token.count() == 0  # the results page posts nothing
    forged = page.request.post("/predict", form={"upload": "anything"})
    assert forged.status == 403
    assert "its token is missing or wrong" in forged.text()
    page.goto("/")
    real = page.locator("input[name=csrf]").get_attribute("value")
    assert real and real not in forged.text()
