"""Tests of the PDF report renderer (attacks.pdf)."""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
import zlib

import numpy as np
import pytest

from attacks.pdf import _roc_on_log_axes, render_pdf
from attacks.reading import CLI_AUDIT, ReportIdentity
from tests.attacks.report_fixture import network_report, sample_report, schema_1

PAGE = re.compile(rb"/Type /Page[^s]")
STREAM = re.compile(rb"stream\r?\n(.*?)endstream", re.DOTALL)
LINE_BREAK = re.compile(r"\bBT\b|T\*")
LITERAL = re.compile(r"\(((?:\\.|[^\\)])*)\)\s*Tj")
UNESCAPE = re.compile(r"\\(.)")
RAW_MARKER = "Zebedee-raw-value-7f3a"


def _pdf_text(pdf: bytes, *, page: int | None = None) -> str:
    """The document's text (one page's, if given): pdftotext if installed, else the
    inflated page streams (the whole document)."""
    if shutil.which("pdftotext"):
        pages = [] if page is None else ["-f", str(page), "-l", str(page)]
        out = subprocess.run(
            ["pdftotext", "-layout", *pages, "-", "-"], input=pdf, capture_output=True, check=True
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
    assert "n/a (tie: 5.0%–26%)" in text
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
    report["verdict"]["reasons"][0]["text"] = "Risk <b>unclear</b> & <img src='/etc/passwd'/>."
    report["rules"] = [{"rule": "r", "risk": "high", "title": "<i>Leaves</i>", "reason": "x"}]
    text = _pdf_text(render_pdf(report))
    assert "<b>unclear</b>" in text
    assert "<i>Leaves</i>" in text


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


IDENTITY = ReportIdentity(
    request=41,
    title="Cardiovascular risk forest",
    version=3,
    researcher="Dr Ada Lovelace",
    project="Readmissions",
    purpose="Released as a file to partner hospitals.",
    audited_at="14 Mar 2025, 10:25 UTC",
)
#: What a checker must never read: names the code uses, not people.
INTERNAL = ("attack:", "rule:", "lira_offline", "worst_case", "n_reference_models", "by rmia")


@pytest.fixture(scope="module")
def request_pdf() -> bytes:
    return render_pdf(
        _without_charts(sample_report()) | {"sweep": sample_report()["sweep"]}, IDENTITY
    )


def test_page_one_names_the_request_the_verdict_and_the_change(request_pdf):
    page = " ".join(_pdf_text(request_pdf, page=1).split())
    for shown in ("Request #41", "Cardiovascular risk forest", "version 3", "Dr Ada Lovelace"):
        assert shown in page
    assert "Readmissions" in page and "Released as a file to partner hospitals." in page
    assert "High risk: the model gives away which people were in its training data." in page
    assert (
        "Recommended change: Setting min_samples_leaf=10 lowers the strongest attack's AUC "
        "from 0.84 to 0.60 at 0.7 points of held-out accuracy." in page
    )
    assert "What it means for a person in the data" in page


def test_every_page_header_names_the_request(request_pdf):
    for page in range(1, _pages(request_pdf) + 1):
        header = _pdf_text(request_pdf, page=page).split("Membership-inference")[0]
        assert "Request #41 · version 3 · Cardiovascular risk forest" in header
        assert "Researcher: Dr Ada Lovelace · Project: Readmissions · Audited 14 Mar 2025" in header


def test_no_internal_identifier_anywhere_in_the_text(request_pdf):
    text = _pdf_text(request_pdf)
    for internal in INTERNAL:
        assert internal not in text
    assert "LiRA (offline) could not run" in text


def test_the_pdf_ends_with_a_glossary_and_says_what_to_do_about_exposed_rows(request_pdf):
    text = " ".join(_pdf_text(request_pdf).split())
    glossary = text.split("Glossary")[-1]
    assert "1/N line" in glossary and "Area under the ROC curve" in glossary
    assert "treat these people as identifiable" in text


def test_a_declared_network_shows_its_layers_and_recipe_in_words():
    text = " ".join(_pdf_text(render_pdf(_without_charts(network_report()), IDENTITY)).split())
    network = text.split("Declared network")[1].split("Data ")[0]
    for shown in (
        "Images of 1 channel, 8x8 pixels",
        "Scores before a softmax (logits)",
        "Trainable parameters 1,386",
        "1 Convolution Conv2d in_channels=1, out_channels=8, kernel_size=3, stride=1,",
        "Max pooling MaxPool2d kernel_size=2, stride=2 8x4x4",
        "Dropout (training only) Dropout p=0.5 128",
        "Fully connected Linear in_features=128, out_features=10, bias=true 10",
        "Optimiser AdamW (betas=[0.9, 0.999])",
        "Learning rate 0.01",
        "Epochs 30",
        "Weight decay 0.05 (decoupled)",
        "Learning-rate schedule cosine, down to 0 over all epochs",
        "Augmentation random crop (padding=1)",
    ):
        assert shown in network, shown
    for internal in (*INTERNAL, "architecture[", "recipe.", '"type"', "lr_schedule"):
        assert internal not in text


def test_a_network_declared_without_a_recipe_says_what_did_not_run():
    text = " ".join(_pdf_text(render_pdf(_without_charts(network_report(recipe=False)))).split())
    recipe = text.split("Training recipe")[1]
    assert recipe.startswith(" No training recipe was declared, so no shadow model of this")
    assert "Epochs" not in recipe.split("Data ")[0]


def test_a_cli_pdf_says_it_is_no_tre_request():
    pdf = render_pdf(_minimal_report())
    assert CLI_AUDIT in " ".join(_pdf_text(pdf, page=1).split()).split("Membership-inference")[1]
    assert _pdf_text(pdf).count(CLI_AUDIT) >= 1 + _pages(pdf)  # page 1 and every header
    assert "Request #" not in _pdf_text(pdf)


def test_a_tied_roc_is_drawn_from_the_log_floor_not_only_in_the_top_right_corner():
    # A tied attack: nothing until half the non-members, then a straight line to (1, 1).
    fpr, tpr = _roc_on_log_axes(np.array([0.0, 0.49, 1.0]), np.array([0.0, 0.62, 1.0]), 1e-3)
    assert fpr[0] == pytest.approx(1e-3) and fpr[-1] == 1.0
    assert tpr[0] == pytest.approx(0.62 / 0.49 * 1e-3)  # on the tie's line, not clipped away
    assert np.all(np.diff(fpr) > 0) and np.all(np.diff(tpr) >= 0)


def test_the_sweep_table_lists_the_submitted_forest_once(request_pdf):
    sweep_page = _pdf_text(request_pdf).split("Hyperparameter sweep")[-1]
    assert re.search(r"min_samples_leaf +1 .*original", sweep_page)
    assert not re.search(r"max_depth +None", sweep_page)
