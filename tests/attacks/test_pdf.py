"""Tests of the PDF report renderer (attacks.pdf)."""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
import zlib

import pytest

from attacks.pdf import render_pdf
from tests.attacks.report_fixture import sample_report, schema_1

PAGE = re.compile(rb"/Type /Page[^s]")
STREAM = re.compile(rb"stream\r?\n(.*?)endstream", re.DOTALL)
LINE_BREAK = re.compile(r"\bBT\b|T\*")
LITERAL = re.compile(r"\(((?:\\.|[^\\)])*)\)\s*Tj")
UNESCAPE = re.compile(r"\\(.)")
RAW_MARKER = "Zebedee-raw-value-7f3a"


def _pdf_text(pdf: bytes) -> str:
    """The document's text: pdftotext if installed, else the inflated page streams."""
    if shutil.which("pdftotext"):
        out = subprocess.run(
            ["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True
        )
        return out.stdout.decode("utf-8", "replace")
    return "\n".join(_inflate(stream) for stream in STREAM.findall(pdf))


def _inflate(stream: bytes) -> str:
    """The text shown by one reportlab stream (ASCII85 then Flate); "" if not text."""
    try:
        raw = base64.a85decode(stream.strip().removesuffix(b"~>"))
        content = zlib.decompress(raw).decode("latin-1")
    except (ValueError, zlib.error):
        return ""
    lines = LINE_BREAK.split(content)
    return "\n".join(
        "".join(UNESCAPE.sub(r"\1", s) for s in LITERAL.findall(line)) for line in lines
    )


def _pages(pdf: bytes) -> int:
    return len(PAGE.findall(pdf))


def _without_charts(report: dict) -> dict:
    """A copy with no ROC curves and no sweep: the same tables, rendered faster."""
    report = copy.deepcopy(report)
    for attack in report["attacks"]:
        attack["roc"] = None
    report["sweep"] = None
    return report


def _minimal_report() -> dict:
    """Every optional part missing; one attack failed with every metric null."""
    report = _without_charts(sample_report())
    failed = next(a for a in report["attacks"] if a["error"])
    report.update(attacks=[failed], rules=[], most_exposed=[])
    del report["record"]
    return report


@pytest.fixture(scope="module")
def sample_pdf() -> bytes:
    return render_pdf(sample_report())


def test_render_pdf_returns_a_pdf_document(sample_pdf):
    assert sample_pdf.startswith(b"%PDF")
    assert sample_pdf.rstrip().endswith(b"%%EOF")


def test_sample_report_has_at_least_three_pages(sample_pdf):
    assert _pages(sample_pdf) >= 3


def test_every_page_has_page_n_of_m_footer(sample_pdf):
    text = _pdf_text(sample_pdf)
    total = _pages(sample_pdf)
    for page in range(1, total + 1):
        assert f"page {page} of {total}" in text


def test_text_shows_verdict_attack_hash_and_unresolvable_tpr(sample_pdf):
    report = sample_report()
    text = _pdf_text(sample_pdf)
    assert "HIGH RISK" in text
    assert "LiRA (online)" in text
    assert report["inputs"][0]["sha256"] in text
    assert report["policy"]["sha256"] in text
    assert "n/a" in text
    assert "not resolvable" in text


def test_same_report_gives_same_bytes(sample_pdf):
    assert render_pdf(sample_report()) == sample_pdf


def test_report_with_every_optional_part_missing_renders():
    pdf = render_pdf(_minimal_report())
    text = _pdf_text(pdf)
    assert pdf.startswith(b"%PDF")
    assert "No structural findings." in text
    assert "No hyperparameter sweep was run" in text
    assert "Queried record" not in text
    assert "Shadow models did not converge" in text


def test_sweep_without_points_shows_its_note():
    report = _without_charts(sample_report())
    report["sweep"] = {"points": [], "note": "No sweep applies to KNeighborsClassifier."}
    assert "No sweep applies to KNeighborsClassifier." in _pdf_text(render_pdf(report))


def test_a_tpr_left_unresolved_by_a_tie_shows_the_tie_range():
    report = _without_charts(sample_report())
    attack = report["attacks"][0]
    attack["tpr_at_fpr"]["0.01"] = None
    tie = {"reason": "tie", "tpr_range": [0.05, 0.255], "tied_members": 51, "tied_non_members": 7}
    attack["tpr_unresolved"] = {"0.01": tie}
    text = _pdf_text(render_pdf(report))
    assert "n/a (tie: 5.0%–25.5%)" in text
    assert "depends on how the tie is ordered" in text


def test_raw_values_appear_only_when_included():
    report = _without_charts(sample_report())
    for record in report["most_exposed"]:
        record["values"] = {"name": RAW_MARKER}
    withheld = _pdf_text(render_pdf(report))
    report["raw_values_included"] = True
    shown = _pdf_text(render_pdf(report))
    assert RAW_MARKER not in withheld
    assert "Raw values are withheld" in withheld
    assert RAW_MARKER in shown
    assert "Raw values included" in shown


def test_report_text_is_escaped_not_parsed_as_markup():
    report = _minimal_report()
    report["verdict"]["summary"] = "Risk <b>unclear</b> & <img src='/etc/passwd'/> here."
    text = _pdf_text(render_pdf(report))
    assert "<b>unclear</b>" in text


@pytest.mark.parametrize("junk", [None, "junk", 7, [None, "x"], {"unexpected": True}])
def test_malformed_report_never_raises(junk):
    report = {key: junk for key in _minimal_report()}
    assert render_pdf(report).startswith(b"%PDF")


def test_malformed_nested_fields_never_raise():
    report = sample_report()
    report["attacks"][1].update(
        auc=float("nan"),
        auc_ci=[None],
        tpr_at_fpr=None,
        roc={"fpr": [0.1, "x"], "tpr": [0.2]},
        details="oops",
    )
    report["sweep"]["points"][0].update(test_accuracy=None, value={"nested": [1, 2]})
    report["sweep"]["recommendation"] = {"text": None}
    report["model"]["params"] = {"x" * 300: "$\\frac{a}{b}$" * 50}
    report["record"] = {"pool_row": "train", "attacks": [None, 3]}
    report["inputs"][0]["sha256"] = None
    assert render_pdf(_without_charts(report) | {"sweep": report["sweep"]}).startswith(b"%PDF")


def test_empty_dict_renders():
    assert _pages(render_pdf({})) >= 1


def test_keeping_the_current_setting_reads_as_such():
    report = sample_report()
    report["sweep"]["recommendation"].update(param=None, value=None)
    text = _pdf_text(render_pdf(report))
    assert "keep the current setting" in text
    assert "None" not in text.split("Recommendation")[1][:80]


def test_a_report_stored_as_schema_1_shows_the_same_run():
    report = _without_charts(sample_report())
    new, old = (_pdf_text(render_pdf(r)) for r in (report, schema_1(report)))
    assert "71.3 s" in new and "41.7 s" in new and "14 Mar 2025, 10:22 UTC" in new
    assert re.search(r"Parallel jobs +4 ", new)
    assert re.sub(r"schema( +)2\.0", r"schema\g<1>1.0", new) == old
