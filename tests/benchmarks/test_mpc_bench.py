"""The secure-inference benchmark's figures, on the LR at 1 and 3 rows with real hosts.

Five real sessions (two row counts, one warm-up and one measured each, and the
timed one), about 15 s with the two hosts' start.
"""

import io
import json
from contextlib import redirect_stdout

import pytest

from benchmarks import mpc_bench

ROWS = (1, 3)


@pytest.fixture(scope="module")
def printed():
    out = io.StringIO()
    argv = ["--models", "lr", "--rows", *map(str, ROWS), "--repeats", "2"]
    with redirect_stdout(out):
        assert mpc_bench.main(argv) == 0
    return out.getvalue().splitlines()


@pytest.fixture(scope="module")
def figures(printed):
    return json.loads(printed[-1])


def test_the_lr_agrees_with_plaintext_within_its_bound(figures):
    assert [row["rows"] for row in figures["mpc"]] == list(ROWS)
    for row in figures["mpc"]:
        assert row["decision_agreement"] == 1.0
        assert row["error_within_bound"] and row["rows_settled"] == row["rows"]
        assert 0 < row["max_abs_logit_error"] <= row["max_error_bound"]
        assert len(row["wall_seconds_runs"]) == 1 and row["wall_seconds"] > 0
        assert row["traffic_same_every_run"]


def _frame(body_bytes: int) -> int:
    return mpc_bench.transport._HEADER.size + body_bytes


def test_the_dealers_derived_bytes_are_what_it_sends_for_one_product(figures):
    """An LR needs one Beaver product, (rows x 30) @ (30 x 1): the dealer sends each party a
    seed (a rank-0 tensor), then the owner the product's size and its share (rank 2)."""
    for row in figures["mpc"]:
        size = json.dumps({"size": [row["rows"], 1]}, separators=(",", ":"))
        expected = 2 * _frame(1 + 8) + _frame(len(size)) + _frame(1 + 2 * 4 + 8 * row["rows"])
        assert row["dealer_derived"]["bytes_sent"] == expected
        assert row["dealer_derived"]["bytes_received"] > 0
        assert row["owner"]["bytes_received"] > row["partner"]["bytes_sent"]


def test_the_he_path_runs_on_the_same_rows(figures):
    assert [row["rows"] for row in figures["he"]] == list(ROWS)
    for row in figures["he"]:
        assert row["decision_agreement"] == 1.0 and row["max_abs_logit_error"] < 1e-4
        assert row["request_bytes_with_context"] > row["request_bytes"] > 0


def test_one_sessions_pieces_are_timed_and_add_up(figures):
    pieces = figures["session_pieces"]
    assert figures["session_pieces_model"] == "lr"
    steps = ["tls_contexts", "tls_handshakes", "crypten_init", "forward"]
    steps += ["hello_reveal_and_bound", "fork_and_answer"]
    assert all(pieces[step] > 0 for step in steps)
    assert sum(pieces[step] for step in steps) == pytest.approx(pieces["wall"], rel=0.01)
    assert 0 < pieces["forward_matmul"] < pieces["forward"] and "forward_relu" not in pieces


def test_the_table_has_a_line_per_session_kind_before_the_json(printed):
    assert sum(line.strip().startswith("LR ") for line in printed) == len(ROWS)
    assert sum("HE LR (standard)" in line for line in printed) == len(ROWS)


def test_a_single_repeat_is_refused_as_it_would_be_only_a_warm_up(capsys):
    with pytest.raises(SystemExit) as exited:
        mpc_bench.main(["--repeats", "1"])
    assert exited.value.code == 2
    assert "warm-up" in capsys.readouterr().err
