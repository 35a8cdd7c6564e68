"""The ``tre-audit`` command as a user runs it: a real process, real files."""

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "tre_audit.cli"]


def run(*args, env_extra=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=1800
    )


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    directory = tmp_path_factory.mktemp("example")
    result = run("example", "famous-patient", "--gamma", "3", "--out", directory)
    assert result.returncode == 0, result.stderr
    return directory


def target_args(example):
    """The model, data and sizing every command here takes."""
    files = ("--model", "model.skops", "--train", "train.csv", "--test", "test.csv")
    paths = [example / f if f.startswith(("model", "train", "test")) else f for f in files]
    return (*paths, "--label", "response", "--shadows", "4", "--jobs", "2")


def audit_args(example, out, *extra):
    return ("audit", *target_args(example), "--out", out, "--seed", "1", *extra)


@pytest.fixture(scope="module")
def audited(example, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    result = run(*audit_args(example, out, "--record", example / "famous_patient.json"))
    return result, out


def test_audit_writes_json_and_pdf_and_exits_zero(audited):
    result, out = audited
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"]["risk"] == "high"
    assert report["record"]["pool_row"] == {"set": "train", "index": 199}
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    assert "HIGH risk" in result.stdout
    assert {i["role"] for i in report["inputs"]} == {"model", "train", "test", "record"}


def test_the_same_seed_writes_the_same_report_json_with_one_job(audited, example, tmp_path):
    from attacks.report import report_dumps

    _, out = audited
    args = list(audit_args(example, tmp_path, "--record", example / "famous_patient.json"))
    args[args.index("--jobs") + 1] = "1"
    assert run(*args).returncode == 0
    texts = [(o / "report.json").read_text() for o in (out, tmp_path)]
    reports = [json.loads(text) for text in texts]
    assert [r.pop("run")["n_jobs"] for r in reports] == [2, 1]
    pairs = zip(reports[0]["attacks"], reports[1]["attacks"], strict=True)
    assert [a["name"] for a, b in pairs if a != b] == []
    assert report_dumps(reports[0]) == report_dumps(reports[1])
    assert texts[0] == report_dumps(json.loads(texts[0]))  # the file is in that one form


def test_audit_prints_its_stages_in_words_when_stderr_is_no_terminal(audited):
    result, _ = audited
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("[") for line in lines)
    assert any("] Sweep: " in line for line in lines)
    assert lines[-1].endswith("Writing the report (100%)")


def test_an_existing_report_is_never_silently_replaced(audited, example):
    _, out = audited
    before = (out / "report.json").read_bytes()
    result = run(*audit_args(example, out, "--no-sweep"))
    assert result.returncode == 2
    assert "already holds a report" in result.stderr
    assert (out / "report.json").read_bytes() == before


#: A progress line ("[12 s] Running: RMIA (45%)"): stderr has these before an error.
PROGRESS = re.compile(r"^\[\d+ (s|min \d+ s)\] ")


def _one_line_error(result):
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("tre-audit: error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_a_pickled_model_is_refused_with_the_conversion(example, tmp_path):
    evil = tmp_path / "model.pkl"
    evil.write_bytes(pickle.dumps({"not": "run"}))
    args = list(audit_args(example, tmp_path / "out"))
    args[args.index("--model") + 1] = evil
    line = _one_line_error(run(*args))
    assert "skops.io.dump" in line
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--label", "outcome", "outcome"),
        ("--train", "missing.csv", "does not exist"),
        ("--test", "model.skops", "CSV"),
    ],
)
def test_bad_inputs_exit_2_in_one_line(example, tmp_path, flag, value, message):
    args = list(audit_args(example, tmp_path / "out", "--no-sweep"))
    args[args.index(flag) + 1] = value if flag == "--label" else example / value
    assert message in _one_line_error(run(*args))


def test_malformed_csv_is_refused(example, tmp_path):
    bad = tmp_path / "train.csv"
    bad.write_text(Path(example / "train.csv").read_text().replace("\n1,", "\nx,", 1))
    args = list(audit_args(example, tmp_path / "out", "--no-sweep"))
    args[args.index("--train") + 1] = bad
    assert "numeric" in _one_line_error(run(*args))


def test_bad_policy_and_attack_names_exit_2(example, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text("[attacks\n")
    assert "TOML" in _one_line_error(run(*audit_args(example, tmp_path / "a", "--policy", policy)))
    assert "Unknown attack" in _one_line_error(
        run(*audit_args(example, tmp_path / "b", "--attacks", "lira,magic"))
    )


def test_argument_errors_exit_2_in_one_line():
    assert "expected one argument" in _one_line_error(run("audit", "--model"))


#: Files that are never read: every number is checked before any file is opened.
UNREAD = ("--model", "m.skops", "--train", "t.csv", "--test", "h.csv", "--label", "y")


@pytest.mark.parametrize(
    "args, message",
    [
        (("audit", *UNREAD, "--out", "o", "--seed", "-1"), "seed must be a whole number from 0"),
        (("audit", *UNREAD, "--out", "o", "--seed", str(2**32)), "to 4294967295, not 4294967296"),
        (("audit", *UNREAD, "--out", "o", "--seed", "1.5"), "--seed: invalid int value"),
        (("audit", *UNREAD, "--out", "o", "--shadows", "0"), "shadow models must be a whole"),
        (("audit", *UNREAD, "--out", "o", "--shadows", "many"), "--shadows: invalid int"),
        (("audit", *UNREAD, "--out", "o", "--jobs", "-2"), "jobs must be a whole number"),
        (("scan", *UNREAD, "--seed", "-1"), "seed must be a whole number"),
        (("scan", *UNREAD, "--shadows", "1"), "sweep shadow models must be a whole number"),
        (("scan", *UNREAD, "--jobs", "0"), "jobs must be a whole number"),
        (("example", "famous-patient", "--out", "o", "--gamma", "-1"), "gamma must be a number"),
        (("example", "famous-patient", "--out", "o", "--gamma", "nan"), "not nan"),
        (("status", "0"), "argument id: must be at least 1"),
        (("status", "3", "--interval", "inf"), "--interval: must be more than 0 and finite"),
        (("status", "3", "--wait", "--timeout", "nan"), "--timeout: must be more than 0"),
        (("submit", *UNREAD, "--title", "t", "--project", "0"), "--project: must be at least 1"),
    ],
)
def test_every_numeric_option_is_checked_exit_2_in_one_line(tmp_path, args, message):
    result = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert message in _one_line_error(result)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even --out


def test_scan_prints_rules_and_a_recommendation(example, tmp_path):
    result = run("scan", *target_args(example), "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[HIGH  ]" in result.stdout and "gamma=3" in result.stdout
    scan = json.loads((tmp_path / "scan.json").read_text())
    assert scan["sweep"]["recommendation"]["param"] in {"gamma", "C"}
    assert "] Sweep: refitting " in result.stderr  # its progress, per grid point


def _write_uploads(directory: Path, uploads: dict) -> list:
    for upload in uploads.values():
        (directory / upload.name).write_bytes(upload.data)
    files = [(f"--{role}", directory / upload.name) for role, upload in uploads.items()]
    return [part for pair in files for part in pair]


def test_a_model_failing_on_the_data_exits_2_without_the_value(tmp_path):
    from tests.factories import JANE, unseen_category_uploads

    files = _write_uploads(tmp_path, unseen_category_uploads())
    result = run(
        "audit", *files, "--label", "response", "--shadows", "2", "--no-sweep", "--out", tmp_path
    )
    line = _one_line_error(result)
    assert "ValueError: Found unknown categories [<value>] in column 0" in line
    assert JANE not in result.stderr + result.stdout and "Jane" not in result.stderr
    assert not (tmp_path / "report.json").exists()


def test_an_unwritable_out_directory_exits_2_in_one_line(example, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = _one_line_error(run(*audit_args(example, blocker / "out", "--no-sweep")))
    assert str(blocker / "out") in line


def test_a_record_that_is_not_json_exits_2_in_one_line(example, tmp_path):
    record = tmp_path / "row.json"
    record.write_text('{"age": 61,')
    line = _one_line_error(run(*audit_args(example, tmp_path / "out", "--record", record)))
    assert "not valid JSON" in line


def test_an_internal_error_exits_1_in_one_line_without_values(monkeypatch, capsys, tmp_path):
    from tre_audit import cli

    def broken(args):
        raise RuntimeError("lookup of 'PATIENT-Jane-Doe' failed")

    monkeypatch.setattr(cli, "_example", broken)
    assert cli.main(["example", "famous-patient", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "tre-audit: internal error: RuntimeError: lookup of <value> failed (--debug shows where)"
    ]
    with pytest.raises(RuntimeError, match="Jane"):
        cli.main(["--debug", "example", "famous-patient", "--out", str(tmp_path)])


def test_a_refusal_by_the_secure_compute_library_exits_2_in_one_line(monkeypatch, capsys):
    from secure_compute.exceptions import AttestationError
    from tre_audit import cli

    def refused(args):
        raise AttestationError("The attestation document is too old.")

    monkeypatch.setattr(cli, "_example", refused)
    assert cli.main(["example", "famous-patient", "--out", "unused"]) == 2
    assert capsys.readouterr().err == "tre-audit: error: The attestation document is too old.\n"


# A neural network: --architecture -----------------------------------------------------


@pytest.fixture(scope="module")
def mlp_dir(mlp_files, tmp_path_factory):
    """The teaching MLP's files as a researcher has them (its recipe light: nn_support)."""
    directory = tmp_path_factory.mktemp("mlp")
    for upload in mlp_files.values():
        (directory / upload.name).write_bytes(upload.data)
    return directory


def network_args(mlp_dir, out, declaration="declaration.json"):
    return (
        *("audit", "--model", mlp_dir / "model.onnx", "--architecture", mlp_dir / declaration),
        *("--train", mlp_dir / "train.csv", "--test", mlp_dir / "test.csv", "--label", "label"),
        *("--shadows", "4", "--jobs", "1", "--no-sweep", "--out", out),
    )


def test_a_network_is_audited_with_its_declared_recipe(mlp_dir, tmp_path):
    result = run(*network_args(mlp_dir, tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert {a["name"]: a["error"] for a in report["attacks"]} == {
        name: None for name in ("shadow", "lira", "lira_offline", "rmia", "worst_case")
    }
    assert report["model"]["declaration"]["recipe"]["epochs"] == 20
    assert "declaration" in {i["role"] for i in report["inputs"]}


def test_a_declaration_that_does_not_fit_the_model_exits_2_in_one_line(mlp_dir, tmp_path):
    declared = json.loads((mlp_dir / "declaration.json").read_text())
    declared["architecture"][-1]["out_features"] = 3
    (tmp_path / "three.json").write_text(json.dumps(declared))
    line = _one_line_error(run(*network_args(mlp_dir, tmp_path / "out", tmp_path / "three.json")))
    assert line.endswith("The architecture ends with 3 outputs, but the labels hold 2 classes.")
    assert not (tmp_path / "out").exists()


def test_a_missing_declaration_file_exits_2_before_the_audit_is_loaded(tmp_path):
    for name in ("m.skops", "t.csv", "h.csv"):  # the others are there (and never read)
        (tmp_path / name).write_bytes(b"x")
    args = ("audit", *UNREAD, "--architecture", "net.json", "--out", "o")
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path)
    assert _one_line_error(result) == "tre-audit: error: net.json does not exist."
    assert not (tmp_path / "o").exists()


def test_scan_takes_a_networks_declaration_and_says_no_sweep_applies(mlp_dir):
    from attacks.scan import NO_ONNX_SWEEP

    files = network_args(mlp_dir, "unused")[1:11]  # --model to --label, as the audit's
    result = run("scan", *files, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["No structural findings.", NO_ONNX_SWEEP]


def test_the_network_examples_are_the_teaching_networks():
    from attacks.nn.teaching import CASES
    from tre_audit.cli import NETWORK_EXAMPLES

    assert [name.replace("-", "_") for name in NETWORK_EXAMPLES] == list(CASES)


def test_a_network_example_writes_what_a_researcher_uploads(tmp_path):
    result = run("example", "breast-cancer-mlp", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    written = {line.split()[0]: Path(line.split()[1]) for line in result.stdout.splitlines()}
    assert sorted(written) == ["declaration", "model", "test", "train"]
    assert written["model"].read_bytes()[:1] == b"\x08"  # an ONNX protobuf's first field
    assert json.loads(written["declaration"].read_text())["input_shape"] == [30]
