"""Render ``report.json`` as a PDF for the output checker deciding on release.

The renderer reads the report dict alone (schema: docs/report-schema.md) and
trusts none of it: any key may be missing, null or of the wrong type, and every
string is escaped before reportlab parses it as markup. Charts are drawn with
matplotlib's object API (no pyplot, so no global state) and embedded as PNG.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from xml.sax.saxutils import escape

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    CondPageBreak,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from attacks import reading
from attacks.reading import FPR_LEVELS, ReportIdentity
from attacks.report import report_run

__all__ = ["ReportIdentity", "render_pdf"]

# --- Page geometry --------------------------------------------------------------------
PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 18 * mm
TOP_MARGIN = 22 * mm  # leaves room for the running header
BOTTOM_MARGIN = 20 * mm  # ... and the footer
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN

# --- Type -----------------------------------------------------------------------------
FONT, FONT_BOLD, FONT_ITALIC = "Helvetica", "Helvetica-Bold", "Helvetica-Oblique"
FONT_MONO = "Courier"
BODY_SIZE, CELL_SIZE = 9, 7.5
HASH_SIZE = 6.5  # a 64-digit SHA-256 in Courier at this size is ~250 pt, under half the page
INK, MUTED, ACCENT = (colors.HexColor(c) for c in ("#1A1A1A", "#5F6B7A", "#1F3A5F"))
# Paragraph styles: name -> (parent, what differs). "body" is defined in _styles().
STYLE_SPECS = {
    "title": ("body", dict(fontName=FONT_BOLD, fontSize=20, leading=24, textColor=ACCENT)),
    "subtitle": ("body", dict(fontSize=11, leading=14, textColor=MUTED, spaceAfter=8)),
    "h2": (
        "body",
        dict(
            fontName=FONT_BOLD,
            fontSize=13,
            leading=16,
            textColor=ACCENT,
            spaceBefore=12,
            spaceAfter=6,
            keepWithNext=1,
        ),
    ),
    "h3": (
        "body",
        dict(
            fontName=FONT_BOLD, fontSize=10, leading=13, spaceBefore=8, spaceAfter=4, keepWithNext=1
        ),
    ),
    "note": (
        "body",
        dict(fontName=FONT_ITALIC, fontSize=7.5, leading=9.5, textColor=MUTED, spaceBefore=2),
    ),
    "verdict_label": ("body", dict(fontName=FONT_BOLD, fontSize=15, leading=18, spaceAfter=0)),
    "verdict_text": ("body", dict(fontSize=10.5, leading=14, spaceAfter=0)),
    "cell": ("body", dict(fontSize=CELL_SIZE, leading=9.3, spaceAfter=0)),
    "cell_bold": ("cell", dict(fontName=FONT_BOLD)),
    "cell_head": ("cell", dict(fontName=FONT_BOLD, textColor=ACCENT)),
    "hash": ("cell", dict(fontName=FONT_MONO, fontSize=HASH_SIZE, leading=HASH_SIZE + 2)),
}

# --- Tables ---------------------------------------------------------------------------
GRID_COLOUR = colors.HexColor("#B8C0CC")
HEADER_FILL = colors.HexColor("#E4E9F0")
LABEL_FILL = colors.HexColor("#F3F5F8")
CELL_PADDING = 3

# --- Risk colours: dark ink on a pale fill (WCAG AA contrast); the word is always printed
RISK_COLOURS = {
    "high": ("#A61B1B", "#FDECEC"),
    "medium": ("#8A4B00", "#FFF3DF"),
    "low": ("#1B6B2F", "#E7F5EA"),
}
UNKNOWN_RISK_COLOURS = ("#3F4A57", "#EEF1F4")

# --- Charts ---------------------------------------------------------------------------
CHART_DPI = 200
ROC_SIZE_IN = (3.05, 2.45)  # one ROC beside its tables, ~7.7 x 6.2 cm
SWEEP_SIZE_IN = (6.8, 3.3)
# Okabe-Ito palette: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
# Point labels of successive series sit on alternate sides so coincident points stay legible.
LABEL_OFFSETS = ((6, 3), (6, -9), (-12, 3), (-12, -9))
CHART_FONT = 7
# Log-axis floor for a zero rate: 1 / (10 n); these bound it when n is missing or absurd.
DEFAULT_LOG_FLOOR, MIN_LOG_FLOOR = 1e-4, 1e-9

# --- Content limits: keep any one cell well under a page, whatever the report holds ----
MAX_VALUE_CHARS = 70
MAX_TEXT_CHARS = 700
MAX_FEATURES = 80
MAX_ROWS = 200
MAX_ROC_POINTS = 5000  # the schema thins curves to ~200; more is drawn but capped
ROC_SAMPLES = 400  # log-even FPRs the curve is drawn through, besides its own vertices
MISSING = "–"
# Readable names of the schema's attack ``details`` keys; other keys are shown as words.
DETAIL_LABELS = {
    "shadow_member_confidence": "Shadow members' mean confidence",
    "shadow_non_member_confidence": "Shadow non-members' mean confidence",
    "n_shadow_models": "Shadow models",
    "n_reference_models": "Reference models",
    "baseline_aucs": "Baseline AUCs (shuffled labels)",
    "p_value": "p-value (AUC vs baselines)",
    "n_splits": "Cross-validation splits",
    "n_baselines": "Baselines (shuffled labels)",
    "online": "Online (shadows may include the record)",
    "offline_a": "Offline correction a",
    "fix_variance": "Fixed variance",
}
NOT_RESOLVABLE = "n/a<super>†</super>"
TIE_NOTE = (
    "<super>‡</super> n/a (tie): members and non-members share one score where this FPR "
    "is reached, so the TPR depends on how the tie is ordered; it lies in the range shown."
)
RECORD_FPR_NOTE = (
    "False-positive rate: the share of non-members that attack scores at least as high as "
    "this record."
)


def render_pdf(report: dict, identity: ReportIdentity | None = None) -> bytes:
    """Render a ``report.json`` dict as a PDF document.

    Parameters
    ----------
    report : dict
        A report following docs/report-schema.md. Missing, null or malformed
        fields are shown as missing; they never raise.
    identity : ReportIdentity, optional
        The request the report belongs to, printed on page 1 and in every page's
        header. None is an audit run from the command line, and the PDF says so.

    Returns
    -------
    bytes
        The PDF file (A4). The same report always gives the same bytes.
    """
    report = _dict(report)
    identity = _identity(identity, report)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=TOP_MARGIN,
        bottomMargin=BOTTOM_MARGIN,
        title=f"Membership-inference audit: {identity.header()}",
        author=_text(_dict(report.get("tool")).get("name"), "tre-audit"),
        subject="Membership-inference audit report",
        invariant=True,
    )
    doc.build(_story(report, identity), canvasmaker=_canvas_class(report, identity))
    return buffer.getvalue()


def _identity(identity: ReportIdentity | None, report: dict) -> ReportIdentity:
    """The identity to print, dated by the report's run when the caller gave no date."""
    identity = identity if isinstance(identity, ReportIdentity) else ReportIdentity()
    if identity.audited_at:
        return identity
    return replace(identity, audited_at=_timestamp(_run(report).get("generated_at")))


def _story(report: dict, identity: ReportIdentity) -> list:
    """Title block, then every section that applies, numbered in order."""
    story = _title_block(report, identity)
    number = 0
    for build in _SECTIONS:
        section = build(report)
        if section is None:
            continue
        number += 1
        title, flowables = section
        story += [
            CondPageBreak(45 * mm),
            _p(f"{number}. {escape(title)}", STYLES["h2"]),
            *flowables,
        ]
    return story


# ======================================================================================
# Safe access and formatting
# ======================================================================================


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value, limit: int = MAX_ROWS) -> list:
    return value[:limit] if isinstance(value, list) else []


def _run(report: dict) -> dict:
    """How this run went (time, seconds, jobs), whichever schema wrote the report."""
    return _dict(report_run(report))


def _dicts(value) -> list[dict]:
    return [item for item in _list(value) if isinstance(item, dict)]


def _num(value) -> float | None:
    """A finite number, or None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value, default: str = MISSING) -> str:
    if value is None or value == "":
        return default
    return _clip(value if isinstance(value, str) else _value(value), MAX_TEXT_CHARS)


def _clip(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(value) -> str:
    """Any JSON value as short text: numbers to 4 figures, lists joined."""
    number = _num(value)
    if number is not None and not isinstance(value, int):
        return f"{number:.4g}"
    if isinstance(value, list):
        return _clip(", ".join(_value(v) for v in value[:20]))
    if isinstance(value, dict):
        return _clip(json.dumps(value, default=str, separators=(", ", ": ")))
    return _clip(str(value))


def _f3(value) -> str:
    number = _num(value)
    return MISSING if number is None else f"{number:.3f}"


def _pct(value, decimals: int | None = None) -> str:
    """A rate as a percentage, as the web page shows it (:func:`attacks.reading.percent`)."""
    return reading.percent(value, decimals)


def _auc_text(auc, ci) -> str:
    ci = ci if isinstance(ci, list) and len(ci) == 2 else [None, None]
    if _num(auc) is None:
        return MISSING
    if _num(ci[0]) is None or _num(ci[1]) is None:
        return _f3(auc)
    return f"{_f3(auc)} ({_f3(ci[0])}–{_f3(ci[1])})"


def _count(value) -> str:
    number = _num(value)
    return MISSING if number is None else f"{number:,.0f}"


def _bytes(value) -> str:
    number = _num(value)
    if number is None:
        return MISSING
    for unit in ("B", "KB", "MB", "GB"):
        if number < 1024 or unit == "GB":
            return f"{number:,.0f} {unit}" if unit == "B" else f"{number:,.1f} {unit}"
        number /= 1024
    return MISSING


def _timestamp(value) -> str:
    if not isinstance(value, str):
        return MISSING
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _clip(value)
    if moment.tzinfo is None:
        return moment.strftime("%d %b %Y, %H:%M")
    return moment.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC")


def _lookup(mapping: dict, key, default: str) -> str:
    """``mapping[key]`` for a string key, else ``default`` (report values may be unhashable)."""
    return mapping.get(key, default) if isinstance(key, str) else default


def _risk(value) -> str | None:
    return value if value in reading.RISKS else None


def _risk_rank(item: dict) -> int:
    return reading.risk_rank(item.get("risk"))


def _model_name(report: dict) -> str:
    model_type = _dict(report.get("model")).get("type")
    return (
        model_type.rsplit(".", 1)[-1]
        if isinstance(model_type, str) and model_type
        else "unknown model"
    )


def _label(key: str) -> str:
    """``n_shadow_models`` -> ``Shadow models``; unknown keys as words."""
    if key in DETAIL_LABELS:
        return DETAIL_LABELS[key]
    words = _clip(str(key), 40).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


# ======================================================================================
# Styles and building blocks
# ======================================================================================


def _styles() -> dict[str, ParagraphStyle]:
    """Every paragraph style, each derived from its parent in ``STYLE_SPECS``."""
    styles = {
        "body": ParagraphStyle(
            "body", fontName=FONT, fontSize=BODY_SIZE, leading=12, textColor=INK, spaceAfter=4
        )
    }
    for name, (parent, overrides) in STYLE_SPECS.items():
        styles[name] = ParagraphStyle(name, styles[parent], **overrides)
    return styles


STYLES = _styles()


def _p(markup: str, style: ParagraphStyle | str = "body") -> Paragraph:
    """A paragraph of trusted markup (callers escape report text first)."""
    return Paragraph(markup, STYLES[style] if isinstance(style, str) else style)


def _t(text, style: str = "body") -> Paragraph:
    """A paragraph of untrusted plain text."""
    return _p(escape(_text(text)), style)


def _cell(value, style: str) -> object:
    if isinstance(value, Paragraph | Table | Image | list):
        return value
    return _p(escape(value if isinstance(value, str) else _text(value)), style)


def _widths(*fractions: float, total: float = CONTENT_WIDTH) -> list[float]:
    return [total * f / sum(fractions) for f in fractions]


def _table(rows: list[list], widths: list[float], *, header: int = 1, style=()) -> Table:
    """A grid table: every cell wrapped, ``header`` rows shaded and repeated on each page."""
    data = [
        [_cell(v, "cell_head" if i < header else "cell") for v in row] for i, row in enumerate(rows)
    ]
    table = Table(data, colWidths=widths, repeatRows=header, hAlign="LEFT")
    commands = [
        ("GRID", (0, 0), (-1, -1), 0.4, GRID_COLOUR),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        *[
            (side, (0, 0), (-1, -1), CELL_PADDING)
            for side in ("TOPPADDING", "BOTTOMPADDING", "LEFTPADDING", "RIGHTPADDING")
        ],
    ]
    if header:
        commands.append(("BACKGROUND", (0, 0), (-1, header - 1), HEADER_FILL))
    table.setStyle(TableStyle([*commands, *style]))
    return table


def _kv_table(pairs: list[tuple], widths: list[float]) -> Table:
    """Label / value rows, labels bold on a pale fill."""
    rows = [[_t(label, "cell_bold"), value] for label, value in pairs]
    return _table(rows, widths, header=0, style=[("BACKGROUND", (0, 0), (0, -1), LABEL_FILL)])


def _side_by_side(cells: list, widths: list[float]) -> Table:
    """Lay flowables out in columns, with no grid of their own."""
    table = Table([cells], colWidths=widths, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 0),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    return table


def _risk_cell(risk) -> Paragraph:
    known = _risk(risk)
    ink = RISK_COLOURS[known][0] if known else UNKNOWN_RISK_COLOURS[0]
    word = known.upper() if known else "UNSTATED"
    return _p(f'<font color="{ink}">{word}</font>', "cell_bold")


def _risk_fills(items: list[dict], column: int = 0) -> list[tuple]:
    """Table commands shading each row's risk cell (rows start after the header)."""
    fills = []
    for row, item in enumerate(items, start=1):
        known = _risk(item.get("risk"))
        fill = RISK_COLOURS[known][1] if known else UNKNOWN_RISK_COLOURS[1]
        fills.append(("BACKGROUND", (column, row), (column, row), colors.HexColor(fill)))
    return fills


def _boxed(flowables: list, ink: str, fill: str, width: float = CONTENT_WIDTH) -> Table:
    """Flowables in a tinted box with a thick left rule."""
    box = Table([[f] for f in flowables], colWidths=[width], hAlign="LEFT")
    box.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor(fill)),
                ("BOX", (0, 0), (-1, -1), 0.6, colors.HexColor(ink)),
                ("LINEBEFORE", (0, 0), (0, -1), 4, colors.HexColor(ink)),
                ("LEFTPADDING", (0, 0), (-1, -1), 10),
                ("RIGHTPADDING", (0, 0), (-1, -1), 10),
                ("TOPPADDING", (0, 0), (-1, -1), 4),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
            ]
        )
    )
    return box


def _figure_image(fig: Figure) -> Image:
    """A matplotlib figure as a PNG flowable at its natural size."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", dpi=CHART_DPI, metadata={"Software": None})
    buffer.seek(0)
    width, height = fig.get_size_inches()
    return Image(buffer, width=width * 72, height=height * 72)


def _mpl(text) -> str:
    """Text for matplotlib with mathtext switched off by escaping dollars."""
    return _clip(str(text), 30).replace("$", r"\$")


def _axes_style(ax) -> None:
    ax.tick_params(labelsize=CHART_FONT - 0.5, length=2.5)
    ax.grid(True, which="major", color="#E3E6EA", linewidth=0.5)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)


# ======================================================================================
# Page furniture: header and "page N of M" footer
# ======================================================================================


def _canvas_class(report: dict, identity: ReportIdentity) -> type[Canvas]:
    """A canvas that defers page furniture until the page count is known."""
    furniture = _furniture(report, identity)

    class NumberedCanvas(Canvas):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pages = []

        def showPage(self):  # noqa: N802 (reportlab's name)
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            for state in self._pages:
                self.__dict__.update(state)
                _draw_furniture(self, furniture, len(self._pages))
                super().showPage()
            super().save()

    return NumberedCanvas


def _furniture(report: dict, identity: ReportIdentity) -> dict:
    risk = _risk(_dict(report.get("verdict")).get("risk"))
    left, second = identity.header_lines()
    return {
        "left": left,
        "second": second,
        "risk": f"Risk: {risk.upper()}" if risk else "Risk: not stated",
        "ink": (RISK_COLOURS[risk] if risk else UNKNOWN_RISK_COLOURS)[0],
        "schema": f"report schema {_text(report.get('schema_version'), 'unknown')}",
    }


def _fit(text: str, font: str, size: float, width: float) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` points in ``font`` at ``size``."""
    text = _clip(text, MAX_TEXT_CHARS)
    while text and stringWidth(text, font, size) > width:
        text = text[:-2].rstrip() + "…"
    return text


def _draw_furniture(canvas: Canvas, furniture: dict, total: int) -> None:
    top, bottom = PAGE_HEIGHT - 10 * mm, 11 * mm
    canvas.saveState()
    canvas.setStrokeColor(GRID_COLOUR)
    canvas.setLineWidth(0.5)
    canvas.line(MARGIN, top - 6 * mm, PAGE_WIDTH - MARGIN, top - 6 * mm)
    canvas.line(MARGIN, bottom + 4 * mm, PAGE_WIDTH - MARGIN, bottom + 4 * mm)
    canvas.setFont(FONT, 8)
    canvas.setFillColor(MUTED)
    canvas.drawString(MARGIN, top, _fit(furniture["left"], FONT, 8, CONTENT_WIDTH - 25 * mm))
    canvas.setFont(FONT, 7)
    canvas.drawString(MARGIN, top - 3.6 * mm, _fit(furniture["second"], FONT, 7, CONTENT_WIDTH))
    canvas.setFont(FONT, 8)
    canvas.drawString(
        MARGIN, bottom, f"tre-audit report — page {canvas.getPageNumber()} of {total}"
    )
    canvas.drawRightString(PAGE_WIDTH - MARGIN, bottom, furniture["schema"])
    canvas.setFont(FONT_BOLD, 8)
    canvas.setFillColor(colors.HexColor(furniture["ink"]))
    canvas.drawRightString(PAGE_WIDTH - MARGIN, top, furniture["risk"])
    canvas.restoreState()


# ======================================================================================
# Title block and verdict
# ======================================================================================


def _title_block(report: dict, identity: ReportIdentity) -> list:
    """Page 1: whose request, the verdict in plain words, the change to ask for, the reasons."""
    plain = reading.summary(report)
    flow = [
        _p("Membership-inference audit", "title"),
        _t(identity.subtitle(), "subtitle"),
        _kv_table([*identity.pairs(), *_meta_pairs(report)], _widths(1, 4)),
        Spacer(1, 8),
        _verdict_box(_dict(report.get("verdict")), plain.verdict),
        Spacer(1, 6),
    ]
    if report.get("raw_values_included") is True:
        flow += [_raw_values_warning(), Spacer(1, 6)]
    flow += _plain_flow(plain)
    return [*flow, *_reasons_flow(report)]


def _plain_flow(plain: reading.Summary) -> list:
    """The evidence in one sentence per kind, what it means, and the recommended change."""
    flow = [_p("What the evidence says", "h3")]
    if plain.evidence:
        rows = [["Risk", "Evidence"]] + [
            [_risk_cell(e.risk), _t(e.text, "cell")] for e in plain.evidence
        ]
        fills = _risk_fills([{"risk": e.risk} for e in plain.evidence])
        flow.append(_table(rows, _widths(0.11, 0.89), style=fills))
    else:
        flow.append(_p("The report gives no evidence.", "body"))
    if plain.meaning:
        flow += [_p("What it means for a person in the data", "h3"), _t(plain.meaning)]
    flow += [Spacer(1, 4), _change_box(plain.change)]
    return flow


def _change_box(change: str) -> Table:
    return _boxed([_p(f"<b>Recommended change:</b> {escape(_text(change))}")], *RISK_COLOURS["low"])


def _reasons_flow(report: dict) -> list:
    reasons = sorted(_dicts(_dict(report.get("verdict")).get("reasons")), key=_risk_rank)
    flow = [_p("Findings behind this verdict", "h3")]
    if not reasons:
        return [*flow, _p("The report gives no reasons.", "body")]
    rows = [["Risk", "Finding", "Reason"]]
    rows += [
        [_risk_cell(r.get("risk")), _source_title(report, r.get("source")), _text(r.get("text"))]
        for r in reasons
    ]
    return [*flow, _table(rows, _widths(0.11, 0.2, 0.69), style=_risk_fills(reasons))]


def _source_title(report: dict, source) -> str:
    return _clip(reading.source_title(report, source if isinstance(source, str) else ""), 80)


def _meta_pairs(report: dict) -> list[tuple]:
    tool = _dict(report.get("tool"))
    model_type = _dict(report.get("model")).get("type")
    return [
        ("Model type", _text(model_type)),
        ("Tool", f"{_text(tool.get('name'), 'tre-audit')} {_text(tool.get('version'), '')}"),
        ("Report schema", _text(report.get("schema_version"))),
    ]


def _verdict_box(verdict: dict, sentence: str) -> Table:
    risk = _risk(verdict.get("risk"))
    ink, fill = RISK_COLOURS[risk] if risk else UNKNOWN_RISK_COLOURS
    word = f"{risk.upper()} RISK" if risk else "RISK NOT STATED"
    label = _p(f'<font color="{ink}">Verdict: {word}</font>', "verdict_label")
    summary = _t(sentence or "No summary given.", "verdict_text")
    return _boxed([label, summary], ink, fill)


def _raw_values_warning() -> Table:
    ink, fill = RISK_COLOURS["high"]
    text = (
        "This report contains raw training values (the audit ran with "
        "--include-raw-values). Treat the report itself as personal data."
    )
    return _boxed([_p(f"<b>Raw values included.</b> {escape(text)}", "body")], ink, fill)


# ======================================================================================
# Model and data
# ======================================================================================


def _model_section(report: dict) -> tuple[str, list]:
    model, data = _dict(report.get("model")), _dict(report.get("data"))
    flow = [_p("Model", "h3"), _kv_table(_model_pairs(model), _widths(1.3, 4))]
    params = _dict(model.get("params"))
    if params:
        flow += [_p("Parameters of the final step", "h3"), _params_table(params)]
    network = reading.declared_network(report)
    if network is not None:
        flow += _network_flow(network)
    flow += [_p("Data", "h3"), _kv_table(_data_pairs(data), _widths(1.3, 4))]
    counts = _class_counts_table(_dict(data.get("class_counts")))
    if counts is not None:
        flow += [Spacer(1, 6), counts]
    flow += [_p("Input files", "h3"), _inputs_table(_dicts(report.get("inputs")))]
    return "Model and data", flow


def _network_flow(network: reading.DeclaredNetwork) -> list:
    """The declared architecture and recipe, in the words of the web page's."""
    rows = [["#", "Layer", "Type", "Settings as declared", "Output per record"]]
    rows += [[str(r.number), r.name, r.kind, r.settings, r.output] for r in network.layers]
    flow = [
        _p("Declared network", "h3"),
        _t(network.note),
        _kv_table(list(network.network), _widths(1.3, 4)),
        Spacer(1, 6),
        _table(rows[: MAX_ROWS + 1], _widths(0.05, 0.2, 0.13, 0.47, 0.15)),
        _p("Training recipe", "h3"),
    ]
    if network.recipe:
        return [*flow, _kv_table(list(network.recipe), _widths(1.3, 4))]
    return [*flow, _t(network.no_recipe)]


def _steps_text(steps) -> str:
    if not isinstance(steps, list):
        return MISSING
    return " › ".join(_text(s) for s in steps[:MAX_ROWS]) if steps else "none (one estimator)"


def _model_pairs(model: dict) -> list[tuple]:
    classes = _list(model.get("classes"))
    return [
        ("Type", _text(model.get("type"))),
        ("Pipeline steps", _steps_text(model.get("pipeline_steps"))),
        ("Classes", _clip(", ".join(_value(c) for c in classes), 300) if classes else MISSING),
        ("Training accuracy", _pct(model.get("train_accuracy"), 1)),
        ("Held-out accuracy", _pct(model.get("test_accuracy"), 1)),
    ]


def _params_table(params: dict) -> Table:
    """Parameters in two column pairs so a long list stays short."""
    items = [(_clip(str(k), 40), _value(v)) for k, v in sorted(params.items())][:MAX_ROWS]
    half = (len(items) + 1) // 2
    left, right = items[:half], items[half:] + [("", "")] * (half - len(items[half:]))
    rows = [["Parameter", "Value", "Parameter", "Value"]]
    rows += [[a, b, c, d] for (a, b), (c, d) in zip(left, right)]
    return _table(rows, _widths(0.2, 0.3, 0.2, 0.3))


def _data_pairs(data: dict) -> list[tuple]:
    return [
        ("Label", _text(data.get("label"))),
        ("Features", _features_text(data)),
        ("Members (training rows)", _count(data.get("n_members"))),
        ("Non-members (held-out rows)", _count(data.get("n_non_members"))),
    ]


def _features_text(data: dict) -> str:
    features = [_clip(str(f), 40) for f in _list(data.get("features"))]
    if not features:
        return MISSING
    shown = ", ".join(features[:MAX_FEATURES])
    more = len(features) - MAX_FEATURES
    extra = f", … and {more} more" if more > 0 else ""
    return f"{len(features)}: {shown}{extra}"


def _class_counts_table(counts: dict) -> Table | None:
    train, test = _dict(counts.get("train")), _dict(counts.get("test"))
    labels = list(dict.fromkeys([*train, *test]))[:MAX_ROWS]
    if not labels:
        return None
    rows = [["Class", "Training rows", "Held-out rows"]]
    rows += [
        [_clip(str(label), 40), _count(train.get(label)), _count(test.get(label))]
        for label in labels
    ]
    return _table(rows, _widths(1, 1, 1, total=CONTENT_WIDTH * 0.6))


def _inputs_table(inputs: list[dict]) -> Table | Paragraph:
    if not inputs:
        return _p("The report lists no input files.", "body")
    hash_width = stringWidth("0" * 64, FONT_MONO, HASH_SIZE) + 2 * CELL_PADDING + 2
    rest = _widths(0.22, 0.55, 0.23, total=CONTENT_WIDTH - hash_width)
    rows = [["Role", "File", "Size", "SHA-256"]]
    rows += [
        [
            _text(i.get("role")),
            _text(i.get("name")),
            _bytes(i.get("bytes")),
            _t(i.get("sha256"), "hash"),
        ]
        for i in inputs
    ]
    return _table(rows, [*rest, hash_width])


# ======================================================================================
# Attacks
# ======================================================================================


def _attacks_section(report: dict) -> tuple[str, list]:
    attacks = _dicts(report.get("attacks"))
    if not attacks:
        return "Attacks", [_p("The report lists no attacks.", "body")]
    flow = [
        _p(
            "Each attack scores every training record (member) and held-out record "
            "(non-member). AUC 0.5 is guessing. The true-positive rate (TPR) at a low "
            "false-positive rate (FPR) shows whether any individuals are exposed with "
            "confidence, which the AUC can hide.",
            "body",
        ),
        _attack_summary_table(attacks, report),
    ]
    if any(_unresolvable(a) for a in attacks):
        flow.append(_unresolvable_note(report))
    if any(_unresolvable(a, tie=True) for a in attacks):
        flow.append(_p(TIE_NOTE, "note"))
    for attack in attacks:
        flow.append(_attack_block(attack, report))
    return "Attacks", flow


def _attack_summary_table(attacks: list[dict], report: dict) -> Table:
    rows = [
        ["Attack", "AUC (95% CI)", "TPR at FPR", "", "", "Advantage", "Time (s)", "Error"],
        ["", "", *[reading.fpr_label(k) for k in FPR_LEVELS], "", "", ""],
    ]
    rows += [_attack_row(a, report) for a in attacks]
    spans = [("SPAN", (c, 0), (c, 1)) for c in (0, 1, 5, 6, 7)] + [("SPAN", (2, 0), (4, 0))]
    return _table(
        rows,
        _widths(0.17, 0.17, 0.08, 0.08, 0.08, 0.09, 0.07, 0.26),
        header=2,
        style=[*spans, ("LINEBELOW", (2, 0), (4, 0), 0.4, GRID_COLOUR)],
    )


def _attack_row(attack: dict, report: dict) -> list:
    return [
        _attack_title(attack),
        _auc_text(attack.get("auc"), attack.get("auc_ci")),
        *[_tpr_cell(attack, k) for k in FPR_LEVELS],
        _f3(attack.get("advantage")),
        _seconds(_attack_seconds(attack, report)),
        _text(attack.get("error"), ""),
    ]


def _attack_title(attack: dict) -> str:
    return _clip(reading.attack_title(attack), MAX_TEXT_CHARS)


def _tpr_cell(attack: dict, key: str) -> Paragraph | str:
    value = _dict(attack.get("tpr_at_fpr")).get(key)
    if _num(value) is not None:
        return _pct(value)
    if attack.get("error"):
        return MISSING
    tie = _tie_range(attack, key)
    if tie is not None:
        return _p(f"n/a (tie: {_pct(tie[0])}–{_pct(tie[1])})<super>‡</super>", "cell")
    return _p(NOT_RESOLVABLE, "cell")


def _tie_range(attack: dict, key: str) -> tuple[float, float] | None:
    """The TPR range a tie leaves at this level, if the report says a tie is why."""
    why = _dict(_dict(attack.get("tpr_unresolved")).get(key))
    bounds = [_num(v) for v in _list(why.get("tpr_range"))]
    if why.get("reason") != "tie" or len(bounds) != 2 or None in bounds:
        return None
    return bounds[0], bounds[1]


def _attack_seconds(attack: dict, report: dict):
    return _dict(_run(report).get("attack_seconds")).get(str(attack.get("name")))


def _seconds(value) -> str:
    number = _num(value)
    return MISSING if number is None else f"{number:,.1f}"


def _unresolvable(attack: dict, *, tie: bool = False) -> bool:
    tpr = _dict(attack.get("tpr_at_fpr"))
    return not attack.get("error") and any(
        _num(tpr.get(k)) is None and (_tie_range(attack, k) is not None) == tie for k in FPR_LEVELS
    )


def _unresolvable_note(report: dict) -> Paragraph:
    n = _num(_dict(report.get("data")).get("n_non_members"))
    here = f" Here 1/n = 1/{n:,.0f} = {_pct(1 / n)}." if n else ""
    return _p(
        f"<super>†</super> n/a: finer than 1/n non-members: not resolvable "
        f"(one false positive already exceeds it).{here}",
        "note",
    )


def _attack_block(attack: dict, report: dict) -> KeepTogether:
    heading = _p(escape(_attack_title(attack)), "h3")
    if attack.get("error"):
        return KeepTogether([heading, _failure_box(attack.get("error"))])
    chart = _roc_chart(attack, _log_floor(attack, report))
    tables = [_tpr_table(attack), Spacer(1, 6), _attack_details_table(attack, report)]
    if chart is None:
        return KeepTogether([heading, *tables])
    chart_width = ROC_SIZE_IN[0] * 72 + 6
    return KeepTogether(
        [heading, _side_by_side([chart, tables], [chart_width, CONTENT_WIDTH - chart_width])]
    )


def _failure_box(error) -> Table:
    text = f"{escape(_text(error))} Its metrics are missing; the other attacks still ran."
    return _boxed([_p(f"<b>This attack failed:</b> {text}")], *RISK_COLOURS["medium"])


def _tpr_table(attack: dict) -> Table:
    tpr = _dict(attack.get("tpr_at_fpr"))
    rows = [["FPR at most", "TPR", "TPR / FPR"]]
    for key in FPR_LEVELS:
        value, level = _num(tpr.get(key)), float(key)
        ratio = MISSING if value is None else f"{value / level:,.1f}×"
        rows.append([reading.fpr_label(key), _tpr_cell(attack, key), ratio])
    return _table(rows, _widths(1, 1, 1, total=_right_column_width()))


def _right_column_width() -> float:
    return CONTENT_WIDTH - ROC_SIZE_IN[0] * 72 - 12


def _attack_details_table(attack: dict, report: dict) -> Table:
    pairs = [
        ("AUC (95% CI)", _auc_text(attack.get("auc"), attack.get("auc_ci"))),
        ("Advantage (max TPR - FPR)", _f3(attack.get("advantage"))),
        ("Smallest resolvable FPR", _pct(attack.get("min_resolvable_fpr"))),
        ("Time", f"{_seconds(_attack_seconds(attack, report))} s"),
    ]
    pairs += [(_label(k), _detail_value(v)) for k, v in _dict(attack.get("details")).items()]
    pairs += [(f"Setting: {_label(k)}", _value(v)) for k, v in _dict(attack.get("params")).items()]
    return _kv_table(pairs[:MAX_ROWS], _widths(1.1, 1, total=_right_column_width()))


def _detail_value(value) -> str:
    number = _num(value)
    if number is not None and 0 < abs(number) < 1e-3:
        return f"{number:.2e}"
    return _value(value)


# --- ROC chart ------------------------------------------------------------------------


def _roc_arrays(roc) -> tuple[np.ndarray, np.ndarray] | None:
    """The curve's finite (fpr, tpr) vertices in [0, 1], by FPR, or None if unusable."""
    roc = _dict(roc)
    fpr, tpr = _list(roc.get("fpr"), MAX_ROC_POINTS), _list(roc.get("tpr"), MAX_ROC_POINTS)
    if len(fpr) != len(tpr) or len(fpr) < 2:
        return None
    values = [(_num(f), _num(t)) for f, t in zip(fpr, tpr)]
    points = np.array(
        [v for v in values if None not in v and 0 <= v[0] <= 1 and 0 <= v[1] <= 1], dtype=float
    ).reshape(-1, 2)
    if len(points) < 2:
        return None
    points = points[np.lexsort((points[:, 1], points[:, 0]))]
    return points[:, 0], points[:, 1]


def _roc_on_log_axes(fpr: np.ndarray, tpr: np.ndarray, floor: float):
    """The whole curve from ``floor`` to 1, sampled log-evenly in FPR.

    Between two vertices the ROC is the straight line of a tie broken at random;
    on log axes that line is a curve, and a curve whose first vertex after (0, 0)
    lies far right (a tied attack's) would otherwise show as a short segment in
    the top-right corner. So the line is drawn from (0, 0), through every vertex.
    """
    if fpr[0] > 0:
        fpr, tpr = np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])
    grid = np.unique(np.concatenate([np.geomspace(floor, 1.0, ROC_SAMPLES), fpr[fpr >= floor]]))
    return grid, np.clip(np.interp(grid, fpr, tpr), floor, 1.0)


def _log_floor(attack: dict, report: dict) -> float:
    """Where zeros go on log axes: a tenth of the finest resolvable FPR."""
    n = _num(_dict(report.get("data")).get("n_non_members"))
    finest = _num(attack.get("min_resolvable_fpr"))
    if n and n >= 1:
        return max(0.1 / n, MIN_LOG_FLOOR)
    if finest and 0 < finest <= 1:
        return max(0.1 * finest, MIN_LOG_FLOOR)
    return DEFAULT_LOG_FLOOR


def _roc_chart(attack: dict, floor: float) -> Image | None:
    curve = _roc_arrays(attack.get("roc"))
    if curve is None:
        return None
    fpr, tpr = _roc_on_log_axes(*curve, floor)
    fig = Figure(figsize=ROC_SIZE_IN, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([floor, 1], [floor, 1], linestyle="--", color="#8C96A3", linewidth=0.8, label="chance")
    ax.plot(fpr, tpr, color=PALETTE[0], linewidth=1.5, label="attack")
    finest = _num(attack.get("min_resolvable_fpr"))
    if finest and floor < finest <= 1:
        ax.axvline(
            finest,
            linestyle=":",
            color=PALETTE[5],
            linewidth=1.1,
            label=f"1/N line (N non-members): {_pct(finest)}",
        )
    _roc_axes(ax, floor)
    return _figure_image(fig)


def _roc_axes(ax, floor: float) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("False-positive rate", fontsize=CHART_FONT)
    ax.set_ylabel("True-positive rate", fontsize=CHART_FONT)
    ax.legend(loc="lower right", fontsize=CHART_FONT - 1, frameon=False)
    _axes_style(ax)


# ======================================================================================
# Structural rules
# ======================================================================================


def _rules_section(report: dict) -> tuple[str, list]:
    rules = sorted(_dicts(report.get("rules")), key=_risk_rank)
    if not rules:
        return "Structural rules", [_p("No structural findings.", "body")]
    intro = _p(
        "Rules check the model's structure (not its outputs) for settings that let it "
        "single out a training record.",
        "body",
    )
    rows = [["Risk", "Finding", "Reason", "Key evidence"]]
    rows += [
        [
            _risk_cell(r.get("risk")),
            _t(r.get("title") or r.get("rule"), "cell_bold"),
            _text(r.get("reason")),
            _evidence_text(r.get("evidence")),
        ]
        for r in rules
    ]
    return "Structural rules", [
        intro,
        _table(rows, _widths(0.1, 0.2, 0.42, 0.28), style=_risk_fills(rules)),
    ]


def _evidence_text(evidence) -> Paragraph | str:
    items = list(_dict(evidence).items())[:6]
    if not items:
        return MISSING
    lines = [f"{escape(_clip(str(k), 30))} = {escape(_value(v))}" for k, v in items]
    return _p("<br/>".join(lines), "cell")


# ======================================================================================
# Hyperparameter sweep
# ======================================================================================


def _sweep_section(report: dict) -> tuple[str, list]:
    sweep = _dict(report.get("sweep"))
    points = reading.sweep_points(sweep, _dict(_dict(report.get("model")).get("params")))[:MAX_ROWS]
    if not points:
        note = _text(sweep.get("note"), "") if sweep else ""
        text = note or "No hyperparameter sweep was run for this model."
        return "Hyperparameter sweep", [_t(text)]
    flow = [_sweep_intro(sweep), _sweep_chart(sweep, points, report)]
    recommendation = _dict(sweep.get("recommendation"))
    flow += [Spacer(1, 6), _recommendation_box(recommendation), Spacer(1, 6)]
    flow.append(_sweep_table(points, recommendation))
    if _text(sweep.get("note"), ""):
        flow.append(_t(sweep.get("note"), "note"))
    return "Hyperparameter sweep", flow


def _tolerance(sweep: dict) -> float | None:
    """The sweep's accuracy tolerance if it is a rate in [0, 1]."""
    tolerance = _num(sweep.get("accuracy_tolerance"))
    return tolerance if tolerance is not None and 0 <= tolerance <= 1 else None


def _sweep_intro(sweep: dict) -> Paragraph:
    tolerance = _tolerance(sweep)
    band = (
        f" The shaded band is within {_points(tolerance, sign=False)} of the original "
        "held-out accuracy."
        if tolerance is not None
        else ""
    )
    return _t(
        f"Each point retrains the model with one hyperparameter changed and measures "
        f"it again with {_text(sweep.get('attack'), 'the sweep attack')}. Lower is "
        f"safer; further right is more accurate.{band}"
    )


def _sweep_chart(sweep: dict, points: list[dict], report: dict) -> Image | Paragraph:
    usable = [p for p in points if _xy(p) is not None]
    if not usable:
        return _p("No sweep point has both an accuracy and an AUC to plot.", "note")
    fig = Figure(figsize=SWEEP_SIZE_IN, layout="constrained")
    ax = fig.add_subplot()
    for i, (param, series) in enumerate(_by_param(usable).items()):
        _plot_series(ax, param, series, i)
    _mark_original(ax, sweep, usable)
    _mark_recommendation(ax, _dict(sweep.get("recommendation")))
    _tolerance_band(ax, sweep)
    _threshold_lines(ax, _dict(_dict(_dict(report.get("policy")).get("thresholds")).get("attacks")))
    _sweep_axes(ax, _text(sweep.get("attack"), "attack"))
    return _figure_image(fig)


def _xy(point: dict) -> tuple[float, float] | None:
    """(held-out accuracy, AUC) if both are rates in [0, 1], else None."""
    x, y = _num(point.get("test_accuracy")), _num(point.get("auc"))
    if x is None or y is None or not (0 <= x <= 1 and 0 <= y <= 1):
        return None
    return x, y


def _by_param(points: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for point in points:
        groups.setdefault(_clip(str(point.get("param")), 30), []).append(point)
    return groups


def _plot_series(ax, param: str, series: list[dict], index: int) -> None:
    xs, ys = zip(*(_xy(p) for p in series))
    colour = PALETTE[index % len(PALETTE)]
    ax.plot(xs, ys, color=colour, linewidth=0.7, alpha=0.55, zorder=2)
    ax.scatter(
        xs,
        ys,
        color=colour,
        marker=MARKERS[index % len(MARKERS)],
        s=22,
        label=_mpl(param),
        zorder=3,
    )
    for x, y, point in zip(xs, ys, series):
        ax.annotate(
            _mpl(_value(point.get("value"))),
            (x, y),
            xytext=LABEL_OFFSETS[index % len(LABEL_OFFSETS)],
            textcoords="offset points",
            fontsize=CHART_FONT - 1,
            color=colour,
        )


def _mark_original(ax, sweep: dict, points: list[dict]) -> None:
    originals = [p for p in points if p.get("is_original") is True]
    xy = _xy(_dict(sweep.get("original"))) or (_xy(originals[0]) if originals else None)
    if xy is not None:
        ax.scatter(*xy, marker="*", s=140, color="#000000", zorder=5, label="original setting")


def _mark_recommendation(ax, recommendation: dict) -> None:
    xy = _xy(recommendation)
    if xy is not None:
        ax.scatter(
            *xy,
            marker="o",
            s=210,
            facecolors="none",
            edgecolors=PALETTE[2],
            linewidths=1.8,
            zorder=6,
            label="recommended",
        )


def _tolerance_band(ax, sweep: dict) -> None:
    original = _xy(_dict(sweep.get("original")))
    tolerance = _tolerance(sweep)
    if original is None or tolerance is None:
        return
    low, high = ax.get_xlim()
    ax.axvspan(
        original[0] - tolerance,
        high,
        color=PALETTE[2],
        alpha=0.12,
        zorder=0,
        label="within accuracy tolerance",
    )
    ax.set_xlim(min(low, original[0] - tolerance - 0.002), high)


def _threshold_lines(ax, thresholds: dict) -> None:
    for key, risk in (("auc_medium", "medium"), ("auc_high", "high")):
        level = _num(thresholds.get(key))
        if level is None or not 0 < level < 1:
            continue
        ink = RISK_COLOURS[risk][0]
        ax.axhline(
            level,
            color=ink,
            linestyle="--",
            linewidth=0.8,
            zorder=1,
            label=f"{risk}-risk AUC ({level:g})",
        )


def _sweep_axes(ax, attack: str) -> None:
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
    ax.set_xlabel("Held-out accuracy", fontsize=CHART_FONT)
    ax.set_ylabel(f"AUC of {_mpl(attack)}"[:40], fontsize=CHART_FONT)
    ax.margins(x=0.08, y=0.1)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=CHART_FONT - 0.5,
        frameon=False,
        markerscale=0.7,
    )
    _axes_style(ax)


def _recommendation_box(recommendation: dict) -> Table:
    if not recommendation:
        text = "no swept setting lowers the risk within the accuracy tolerance."
        return _boxed([_p(f"<b>No recommendation:</b> {text}")], *UNKNOWN_RISK_COLOURS)
    setting = _clip(reading.setting_text(recommendation.get("param"), recommendation.get("value")))
    if recommendation.get("param") is None:
        setting = "keep the current setting"
    return _boxed(
        [
            _p(f"<b>Recommendation:</b> {escape(setting)}"),
            _t(recommendation.get("text") or ""),
            _t(_recommendation_numbers(recommendation), "note"),
        ],
        *RISK_COLOURS["low"],
    )


def _recommendation_numbers(recommendation: dict) -> str:
    return (
        f"AUC {_f3(recommendation.get('auc'))} (reduction "
        f"{_f3(recommendation.get('auc_reduction'))}); held-out accuracy "
        f"{_pct(recommendation.get('test_accuracy'), 1)} (change "
        f"{_points(recommendation.get('accuracy_change'))})"
    )


def _points(value, *, sign: bool = True) -> str:
    """A difference of two rates in percentage points."""
    number = _num(value)
    if number is None:
        return MISSING
    text = f"{100 * number:+.1f}" if sign else f"{100 * number:.3g}"
    return f"{text} percentage point{'' if text in ('1', '+1.0', '-1.0') else 's'}"


def _sweep_table(points: list[dict], recommendation: dict) -> Table:
    rows = [
        [
            "Parameter",
            "Value",
            "Held-out accuracy",
            "Training accuracy",
            "AUC (95% CI)",
            "TPR at 1% FPR",
            "Note",
        ]
    ]
    rows += [_sweep_row(p, recommendation) for p in points]
    marks = [i for i, p in enumerate(points, start=1) if _is_recommended(p, recommendation)]
    style = [
        ("BACKGROUND", (0, r), (-1, r), colors.HexColor(RISK_COLOURS["low"][1])) for r in marks
    ]
    return _table(rows, _widths(0.17, 0.1, 0.13, 0.13, 0.19, 0.11, 0.17), style=style)


def _sweep_row(point: dict, recommendation: dict) -> list:
    notes = [
        "original" if point.get("is_original") is True else "",
        "recommended" if _is_recommended(point, recommendation) else "",
    ]
    return [
        _text(point.get("param")),
        _value(point.get("value")),
        _pct(point.get("test_accuracy"), 1),
        _pct(point.get("train_accuracy"), 1),
        _auc_text(point.get("auc"), point.get("auc_ci")),
        _pct(point.get("tpr_at_1pct_fpr")),
        ", ".join(n for n in notes if n) or "",
    ]


def _is_recommended(point: dict, recommendation: dict) -> bool:
    return (
        bool(recommendation)
        and "param" in recommendation
        and (
            point.get("param") == recommendation.get("param")
            and point.get("value") == recommendation.get("value")
        )
    )


# ======================================================================================
# Queried record
# ======================================================================================


def _record_section(report: dict) -> tuple[str, list] | None:
    if report.get("record") is None:
        return None
    record = _dict(report.get("record"))
    pairs = [
        ("Membership probability", _pct(record.get("membership_probability"), 1)),
        ("From attack", f"{_title_of(report, record.get('attack'))} (the strongest that ran)"),
        ("Label", _label_source(record.get("label_source"))),
        ("In the audit data", _pool_row_text(record.get("pool_row"))),
    ]
    flow = [_kv_table(pairs, _widths(1, 3))]
    attacks = _dicts(record.get("attacks"))
    if attacks:
        flow += [Spacer(1, 6), _record_attacks_table(attacks, report), _p(RECORD_FPR_NOTE, "note")]
    return "Queried record", flow


def _record_attacks_table(attacks: list[dict], report: dict) -> Table:
    rows = [["Attack", "Membership probability", "False-positive rate"]]
    for attack in attacks:
        rows.append(
            [
                _title_of(report, attack.get("name")),
                _pct(attack.get("membership_probability"), 1),
                _pct(attack.get("false_positive_rate")),
            ]
        )
    return _table(rows, _widths(2, 1.5, 1.5, total=CONTENT_WIDTH * 0.75))


def _title_of(report: dict, name) -> str:
    """The name people see for the attack called ``name``."""
    return _clip(reading.attack_name(name), MAX_TEXT_CHARS)


def _label_source(value) -> str:
    return _lookup(
        {
            "given": "given with the record",
            "predicted": "predicted by the model (the record had no label)",
        },
        value,
        _text(value),
    )


def _pool_row_text(pool_row) -> str:
    row = _dict(pool_row)
    if not row:
        return "no: the record is not one of the audited rows"
    where = _lookup({"train": "training set", "test": "held-out set"}, row.get("set"), "audit data")
    return f"yes: {where}, row {_text(row.get('index'))}"


# ======================================================================================
# Most exposed records
# ======================================================================================


def _exposed_section(report: dict) -> tuple[str, list]:
    records = _dicts(report.get("most_exposed"))
    raw = report.get("raw_values_included") is True
    if not records:
        flow = [_p("The report lists no exposed records.")]
    else:
        strongest = _strongest(report)
        by = f"the strongest attack ({strongest})" if strongest else "the strongest attack"
        flow = [
            _t(f"The training records {by} scores as most likely members, most exposed first."),
            _t(reading.EXPOSED_GUIDANCE),
            _exposed_table(records, raw),
        ]
    flow.append(_p(escape(_naming_note(raw)), "note"))
    return "Most exposed records", flow


def _strongest(report: dict) -> str | None:
    """Name of the attack with the highest AUC among those that ran."""
    strongest = reading.strongest_attack(report)
    return None if strongest is None else strongest.name


def _exposed_table(records: list[dict], raw: bool) -> Table:
    rows = [["Rank", "Row index", "Record hash", "Score", "Membership probability"]]
    rows += [
        [
            str(rank),
            _text(r.get("index")),
            _t(r.get("hash"), "hash"),
            _detail_value(r.get("score")),
            _pct(r.get("probability"), 1),
        ]
        for rank, r in enumerate(records, 1)
    ]
    if not raw:
        return _table(rows, _widths(0.08, 0.14, 0.3, 0.14, 0.2, total=CONTENT_WIDTH * 0.86))
    rows[0].append("Values")
    for row, record in zip(rows[1:], records):
        row.append(_t(_raw_values_text(record.get("values")), "cell"))
    return _table(rows, _widths(0.06, 0.08, 0.17, 0.08, 0.11, 0.5))


def _raw_values_text(values) -> str:
    """A record's raw values as ``feature = value`` pairs."""
    if not isinstance(values, dict):
        return _text(values)
    pairs = (f"{_clip(str(k), 40)} = {_value(v)}" for k, v in values.items())
    return _clip("; ".join(pairs), MAX_TEXT_CHARS)


def _naming_note(raw: bool) -> str:
    naming = (
        "Records are named by their row index in the training file and a keyed hash "
        "(HMAC-SHA256 keyed with the training file's SHA-256, first 16 hex digits): "
        "whoever holds the training file can find the row; an outsider cannot "
        "recover it."
    )
    if raw:
        return "Raw values are included because the audit ran with --include-raw-values. " + naming
    return "Raw values are withheld. " + naming


# ======================================================================================
# Reproducibility
# ======================================================================================


def _reproducibility_section(report: dict) -> tuple[str, list]:
    repro, policy = _dict(report.get("reproducibility")), _dict(report.get("policy"))
    run = _kv_table(_run_pairs(repro, _run(report)), _widths(1, 1.9, total=CONTENT_WIDTH * 0.6 - 6))
    flow = [_side_by_side([run, _versions_table(_dict(repro.get("versions")))], _widths(0.6, 0.4))]
    flow += _shadow_rounds_flow(_dict(report.get("shadow_rounds")))
    flow += [_p("Risk policy", "h3"), _kv_table(_policy_pairs(policy), _widths(1, 4))]
    thresholds = _dict(policy.get("thresholds"))
    if thresholds:
        flow += [_p("Policy thresholds", "h3"), _thresholds_grid(thresholds)]
    return "Reproducibility", flow


def _shadow_rounds_flow(rounds: dict) -> list:
    """How many shadow models were trained, round by round, and why no more."""
    if not rounds:
        return []
    steps = []
    for done in _list(rounds.get("rounds")):
        done = _dict(done)
        best = next(
            (
                _dict(a)
                for a in _list(done.get("attacks"))
                if _dict(a).get("attack") == done.get("strongest")
            ),
            {},
        )
        name = reading.attack_name(best.get("attack"))
        figure = f" ({_text(name)} AUC {_f3(best.get('auc'))})" if best else ""
        steps.append(f"{_text(done.get('n_models'))}{figure}")
    text = _text(rounds.get("stopped"))
    if steps:
        text += " Rounds: " + "; ".join(steps) + "."
    return [_p("Shadow models", "h3"), _t(text)]


def _run_pairs(repro: dict, run: dict) -> list[tuple]:
    attacks = ", ".join(reading.attack_name(a) for a in _list(repro.get("attacks"))) or MISSING
    return [
        ("Seed", _text(repro.get("seed"))),
        ("Shadow models", _text(repro.get("n_shadow_models"))),
        ("Parallel jobs", _text(run.get("n_jobs"))),
        ("Attacks run", attacks),
        ("Platform", _text(repro.get("platform"))),
        ("Audit wall time", f"{_seconds(run.get('seconds'))} s"),
    ]


def _versions_table(versions: dict) -> Table | Paragraph:
    if not versions:
        return _p("No package versions recorded.", "note")
    rows = [["Package", "Version"]]
    rows += [[_clip(str(k), 30), _text(v, "not installed")] for k, v in versions.items()]
    return _table(rows[:MAX_ROWS], _widths(1, 1, total=CONTENT_WIDTH * 0.4))


def _policy_pairs(policy: dict) -> list[tuple]:
    return [
        ("Name", _text(policy.get("name"))),
        ("Version", _text(policy.get("version"))),
        ("SHA-256", _t(policy.get("sha256"), "hash")),
    ]


def _thresholds_grid(thresholds: dict) -> Table:
    """One compact table per policy section, two sections to a row."""
    width = CONTENT_WIDTH / 2 - 6
    tables = [
        _threshold_table(str(name), _dict(values), width)
        for name, values in list(thresholds.items())[:40]
    ]
    rows = [
        tables[i : i + 2] + [""] * (2 - len(tables[i : i + 2])) for i in range(0, len(tables), 2)
    ]
    grid = Table(rows, colWidths=[CONTENT_WIDTH / 2] * 2, hAlign="LEFT")
    grid.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 8),
            ]
        )
    )
    return grid


def _threshold_table(name: str, values: dict, width: float) -> Table:
    rows = [[f"[{_clip(name, 30)}]", ""]]
    rows += [[_clip(str(k), 40), _value(v)] for k, v in values.items()]
    return _table(rows[:MAX_ROWS], _widths(2, 1, total=width), style=[("SPAN", (0, 0), (-1, 0))])


def _glossary_section(report: dict) -> tuple[str, list]:
    rows = [["Term", "Meaning"]] + [[term, text] for term, text in reading.GLOSSARY.items()]
    return "Glossary", [_table(rows, _widths(0.22, 0.78))]


_SECTIONS = (
    _model_section,
    _attacks_section,
    _rules_section,
    _sweep_section,
    _record_section,
    _exposed_section,
    _reproducibility_section,
    _glossary_section,
)
