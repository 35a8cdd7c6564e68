"""The partner's local secure-inference app without a browser: binding, rows, shares, the CLI.

Its pages are driven in headless Chromium by tests/integration/test_browser_mpc_app.py,
with a real partner session behind them; here ``predict`` is a plain function.
"""

import re
import threading

import numpy as np
import pytest
import requests

from secure_compute.exceptions import MPCError, MPCUnavailable
from secure_compute.mpc import Architecture, Layer, Prediction, SessionStats, predictions_of
from tre_audit import cli, mpc_app

ARCHITECTURE = Architecture(
    layers=(Layer("dense", 3, 1),),
    output="logistic",
    classes=("no", "yes"),
    feature_names=("a", "b", "c"),
)


def _sum_predict(X):
    logits = X.sum(axis=1, keepdims=True)
    return Prediction(
        logits, predictions_of(ARCHITECTURE, logits), np.full(len(X), 1e-3), SessionStats(1, 2, 3)
    )


@pytest.fixture
def app_url():
    server = mpc_app.app_server(ARCHITECTURE, _sum_predict, endpoint="7")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _token(url) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', requests.get(url + "/").text).group(1)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.2", "localhost"])
def test_binding_anywhere_but_the_loopback_address_is_refused(host):
    with pytest.raises(MPCError, match=r"^The secure-inference app listens on 127\.0\.0\.1 only"):
        mpc_app.app_server(ARCHITECTURE, _sum_predict, endpoint="7", host=host)


def test_the_two_shares_add_up_to_the_fixed_point_value_modulo_2_to_the_64():
    X = np.array([[1.5, -2.25, 4300.0], [0.0, 1e-5, -0.5]])
    encoded, mask, masked = mpc_app.shares_demo(X, rng=np.random.default_rng(0))
    assert encoded.tolist() == [[98304, -147456, 281804800], [0, 0, -32768]]
    total = (mask.view(np.uint64) + masked.view(np.uint64)).view(np.int64)
    assert (total == encoded).all()
    assert not (mask == encoded).any() and len(set(mask.ravel().tolist())) == mask.size
    again = mpc_app.shares_demo(X, rng=np.random.default_rng(1))[1]
    assert not (again == mask).any(), "a fresh generator draws fresh masks"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a,b,c\n1,2,3\n4,x,6\n", "Column 'b' holds a value that is not a number (row 2)."),
        (b"a,b\n1,2\n", "The rows have 2 columns; the model reads 3."),
        (b"a,b,d\n1,2,3\n", "The file's columns are not the model's: it lacks 'c'."),
        (b"a,b,c\n1,,3\n", "The rows hold missing or infinite values"),
        (b"a,b,c\n", "The data file has a header but no rows."),
        (b"\xff\xfe,a\n", "The CSV file is not UTF-8 text"),
    ],
)
def test_unreadable_rows_are_refused_in_one_sentence(data, message):
    with pytest.raises(MPCError) as caught:
        mpc_app.rows_read(ARCHITECTURE, data)
    assert str(caught.value).startswith(message.rstrip(".")), str(caught.value)


def test_columns_are_taken_by_the_models_names_in_its_order():
    X = mpc_app.rows_read(ARCHITECTURE, b"c,extra,a,b\n3,9,1,2\n")
    assert X.tolist() == [[1.0, 2.0, 3.0]]


def test_the_flow_over_http_with_the_token_and_a_403_without_it(app_url):
    token = _token(app_url)
    upload = requests.post(
        app_url + "/shares",
        data={"csrf": token},
        files={"rows": ("r.csv", b"a,b,c\n1,2,3\n-4,0.5,1\n")},
    )
    assert upload.status_code == 200 and "shares-row-2" in upload.text
    assert upload.headers["Content-Security-Policy"] == mpc_app.CSP
    key = re.search(r'name="upload" value="([^"]+)"', upload.text).group(1)
    result = requests.post(app_url + "/predict", data={"csrf": token, "upload": key})
    assert result.status_code == 200
    csv_url = re.search(r'href="(/results/[^"]+)"', result.text).group(1)
    assert requests.get(app_url + csv_url).text.splitlines() == [
        "row,prediction,logit_0,error_bound",
        "1,yes,6.000000,0.001",
        "2,no,-2.500000,0.001",
    ]
    forged = requests.post(app_url + "/predict", data={"upload": key})
    assert forged.status_code == 403 and "token is missing or wrong" in forged.text
    wrong = requests.post(app_url + "/predict", data={"csrf": token[:-1] + "x", "upload": key})
    assert wrong.status_code == 403


def test_a_foreign_host_name_and_an_oversized_upload_are_refused(app_url):
    rebound = requests.get(app_url + "/", headers={"Host": "attacker.example:80"})
    assert rebound.status_code == 403 and "its own address" in rebound.text
    rows = b"a,b,c\n" + b"1,2,3\n" * (mpc_app.MAX_UPLOAD_BYTES // 6 + 20_000)
    huge = requests.post(
        app_url + "/shares", data={"csrf": _token(app_url)}, files={"rows": ("r.csv", rows)}
    )
    assert huge.status_code == 413 and "larger than 8 MB" in huge.text


@pytest.mark.parametrize(
    ("error", "status"), [(MPCUnavailable("The dealer is down."), 503), (MPCError("No."), 400)]
)
def test_a_failed_session_is_one_sentence_on_the_page(error, status):
    def failing(X):
        raise error

    server = mpc_app.app_server(ARCHITECTURE, failing, endpoint="7")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        token = _token(url)
        shares = requests.post(
            url + "/shares", data={"csrf": token}, files={"rows": ("r.csv", b"a,b,c\n1,2,3\n")}
        )
        key = re.search(r'name="upload" value="([^"]+)"', shares.text).group(1)
        answer = requests.post(url + "/predict", data={"csrf": token, "upload": key})
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == status
    assert str(error) in answer.text and "Traceback" not in answer.text


def test_the_cli_refuses_a_port_out_of_range(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["mpc", "app", "7", "--port", "70000", "--token", "t"])
    assert caught.value.code == 2
    assert "must be a port number, 0 to 65535" in capsys.readouterr().err
