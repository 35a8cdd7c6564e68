"""Charts for the web pages, drawn on the server as SVG: no script, no inline style.

Each chart function takes plain numbers (a report dict, rows from a selector) and
returns a :class:`Chart`, or None when there is nothing to draw: the SVG markup,
its legend and the table behind it. Every text that goes into the SVG is escaped
here, so the markup is marked safe (``__html__``) for the template; the legend and
the table are plain strings the template escapes. No Django import.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape

from attacks import reading
from attacks.metrics import FPR_LEVELS

#: At most this many vertices are drawn per ROC curve: enough for a smooth curve at
#: any screen width, few enough that a page with five attacks stays small.
MAX_CURVE_POINTS = 400
#: Okabe-Ito colours (told apart with colour-blindness too); each series also has
#: its own dash pattern so the chart reads in greyscale.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")
DASHES = ("", "7 3", "2 3", "9 3 2 3", "4 2", "1 2", "12 4")
RISK_COLOURS = {"low": "#1a7f37", "medium": "#9a6700", "high": "#cf222e"}
UNKNOWN_COLOUR = "#57606a"


class Svg(str):
    """SVG markup whose every text was escaped when it was built: safe in a template."""

    def __html__(self) -> str:
        return self


@dataclass(frozen=True)
class Series:
    """One line or set of points, named for people, with how it is drawn."""

    label: str
    colour: str
    dash: str = ""


@dataclass(frozen=True)
class Table:
    """The numbers behind a chart: the first cell of each row names it."""

    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Chart:
    """A chart ready to render: ``svg`` is markup, everything else plain text."""

    id: str
    title: str
    desc: str
    svg: Svg
    table: Table
    legend: tuple[Series, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Frame:
    """The SVG's size and the plot area inside it, in SVG units."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top


ROC_FRAME = Frame(width=448, height=420, left=64, right=24, top=16, bottom=56)
WIDE_FRAME = Frame(width=480, height=320, left=60, right=20, top=20, bottom=56)


# The request page -------------------------------------------------------------

ROC_NOTE = (
    "A curve higher up and further left is an attack that finds more training records "
    "while accusing fewer non-members. Left of the dashed 1/N line (shaded) the data "
    "has too few non-members to measure a rate."
)
SWEEP_NOTE = (
    "Lower is safer, further right is more accurate; the settings of one parameter "
    "are joined in the order they were swept."
)


def report_charts(report: dict | None) -> dict[str, Chart | None]:
    """The request page's charts of one report: ROC curves and the sweep's trade-off."""
    report = report if isinstance(report, dict) else {}
    return {"roc": roc_chart(report), "sweep": sweep_chart(report.get("sweep"))}


def roc_chart(report: dict) -> Chart | None:
    """Log-log ROC curves of the attacks that ran, with chance and the 1/N line.

    1/N (N non-members) is the smallest false-positive rate the data can resolve:
    left of it the curve says nothing, so that band is shaded.
    """
    curves = [(a, curve) for a in _list(report.get("attacks")) if (curve := _roc_curve(a))]
    if not curves:
        return None
    resolvable = resolvable_fpr(report)
    floor = axis_floor(resolvable)
    x = _log_scale(floor, ROC_FRAME.x0, ROC_FRAME.x1)
    y = _log_scale(floor, ROC_FRAME.y0, ROC_FRAME.y1)
    legend = tuple(_series(i, reading.attack_title(a)) for i, (a, _) in enumerate(curves))
    body = _roc_axes(floor, resolvable, x, y)
    for series, (_, curve) in zip(legend, curves):
        points = [(x(f), y(t)) for f, t in thin_curve(curve, floor=floor)]
        body.append(_path(points, series, "chart-series"))
    body += _roc_labels(resolvable, floor, x, y)
    title = "ROC curves of the attacks (log-log)"
    desc = _roc_desc(curves, resolvable)
    svg = _svg("roc-chart", title, desc, ROC_FRAME, body)
    return Chart("roc-chart", title, desc, svg, roc_table(curves, resolvable), legend, ROC_NOTE)


def resolvable_fpr(report: dict) -> float | None:
    """1 / number of non-members, from the data summary or the attacks' own figure."""
    n = _number(_dict(report.get("data")).get("n_non_members"))
    if n and n >= 1:
        return 1 / n
    figures = [_number(a.get("min_resolvable_fpr")) for a in _list(report.get("attacks"))]
    figures = [f for f in figures if f and 0 < f < 1]
    return min(figures) if figures else None


def axis_floor(resolvable: float | None) -> float:
    """The decade the log axes start at: below 1/N, so the 1/N line stands clear of the axis."""
    if not resolvable:
        return FPR_LEVELS[0]
    return 10 ** math.floor(math.log10(resolvable / 2))


def thin_curve(curve: list[tuple[float, float]], *, floor: float) -> list[tuple[float, float]]:
    """The curve from FPR ``floor`` to 1, clipped and thinned to at most MAX_CURVE_POINTS.

    It starts where the segment into ``floor`` crosses it (a log axis has no 0), and
    keeps, at each of MAX_CURVE_POINTS log-spaced FPRs, the highest vertex at or left
    of it: the step curve's upper edge, dense where a log axis needs it.
    """
    clipped = [(f, _clip(t, floor)) for f, t in _from_floor(sorted(curve), floor)]
    if len(clipped) <= MAX_CURVE_POINTS:
        return clipped
    fprs = [f for f, _ in clipped]
    steps = MAX_CURVE_POINTS - 2  # steps + 1 grid points, and the curve's first vertex
    grid = [floor ** (1 - i / steps) for i in range(steps + 1)]
    kept = sorted({max(bisect_right(fprs, g) - 1, 0) for g in grid} | {0})
    return [clipped[i] for i in kept]


def _from_floor(curve: list[tuple[float, float]], floor: float) -> list[tuple[float, float]]:
    """The vertices at FPR >= ``floor``, led by the point where the curve crosses ``floor``.

    Every ROC runs from (0, 0) to (1, 1), and between two vertices it is a straight
    line (a threshold chosen at random between them), so a curve stored without
    its ends gets them and the crossing is interpolated; on log axes that line
    from (0, 0) rises with slope 1, parallel to chance.
    """
    curve = [(0.0, 0.0), *((_clip(f, 0.0), t) for f, t in curve), (1.0, 1.0)]
    first = next(i for i, (f, _) in enumerate(curve) if f >= floor)  # (1, 1) at the latest
    if curve[first][0] == floor:
        return curve[first:]
    (fa, ta), (fb, tb) = curve[first - 1], curve[first]
    return [(floor, ta + (tb - ta) * (floor - fa) / (fb - fa)), *curve[first:]]


def roc_table(curves: list[tuple[dict, list]], resolvable: float | None) -> Table:
    """Each attack's AUC and TPR at the report's FPR levels, as the report states them."""
    columns = ("Attack", "AUC") + tuple(
        f"TPR at {reading.fpr_label(k)} FPR" for k in reading.FPR_LEVELS
    )
    rows = tuple(
        (
            reading.attack_title(a),
            _decimal(a.get("auc")),
            *(_tpr_cell(a, k) for k in reading.FPR_LEVELS),
        )
        for a, _ in curves
    )
    caption = "Share of training records each attack finds at a false-positive rate."
    if resolvable:
        caption += f" 1/N = {reading.percent(resolvable)}: no rate below it can be measured."
    return Table(caption, columns, rows)


def _roc_curve(attack: dict) -> list[tuple[float, float]] | None:
    """The attack's ROC as finite (FPR, TPR) pairs, or None (failed, missing, malformed)."""
    if not isinstance(attack, dict) or attack.get("error"):
        return None
    roc = _dict(attack.get("roc"))
    fpr, tpr = _list(roc.get("fpr")), _list(roc.get("tpr"))
    if len(fpr) != len(tpr):
        return None
    pairs = [(_number(f), _number(t)) for f, t in zip(fpr, tpr)]
    pairs = [(f, t) for f, t in pairs if f is not None and t is not None]
    return pairs if len(pairs) >= 2 else None


def _roc_axes(floor: float, resolvable: float | None, x, y) -> list[str]:
    f = ROC_FRAME
    decades = [10**e for e in range(round(math.log10(floor)), 1)]
    body = _grid(decades, x, y, f)
    if resolvable and resolvable > floor:
        band = f'<rect class="chart-unresolved" x="{_n(f.x0)}" y="{_n(f.y1)}" '
        band += f'width="{_n(x(resolvable) - f.x0)}" height="{_n(f.y0 - f.y1)}" fill="#eaeef2"/>'
        body.insert(0, band)
        body.append(
            _line(x(resolvable), f.y0, x(resolvable), f.y1, "chart-floor", "#57606a", "5 3")
        )
    body.append(_line(f.x0, f.y0, f.x1, f.y1, "chart-chance", "#8c959f", "3 3"))
    return body


def _roc_labels(resolvable: float | None, floor: float, x, y) -> list[str]:
    """Drawn after the curves (with a halo) so that no curve hides them."""
    f = ROC_FRAME
    body = [_text(x(0.3), y(0.3) + 18, "chance", "chart-note", anchor="middle")]
    if resolvable and resolvable > floor:
        body.append(_text(x(resolvable) + 4, f.y0 - 8, "1/N", "chart-note"))
    return body + _axis_labels(f, "False-positive rate (non-members accused)", "True-positive rate")


def _roc_desc(curves: list[tuple[dict, list]], resolvable: float | None) -> str:
    aucs = "; ".join(f"{reading.attack_title(a)}: AUC {_decimal(a.get('auc'))}" for a, _ in curves)
    where = (
        f" The dashed vertical line is 1/N = {reading.percent(resolvable)}." if resolvable else ""
    )
    return (
        f"True-positive against false-positive rate of {len(curves)} attack(s), both axes "
        f"logarithmic; the diagonal is guessing.{where} {aucs}."
    )


def _tpr_cell(attack: dict, level: str) -> str:
    """The TPR as the report's reader words it, the reason beside an n/a (the caption
    gives 1/N)."""
    cell = reading.tpr_cell(attack, level)
    return cell.text if cell.value is not None else f"n/a: {cell.why}"


# The sweep ----------------------------------------------------------------------


def sweep_chart(sweep: dict | None) -> Chart | None:
    """Attack AUC (risk) against held-out accuracy, one point per setting swept.

    The submitted setting and the suggested one are marked and labelled; the
    settings of one parameter are joined in the order they were swept.
    """
    sweep = _dict(sweep)
    points = [p for p in _list(sweep.get("points")) if _sweep_xy(p)]
    if not points:
        return None
    suggested = _suggested(sweep)
    xs = [_sweep_xy(p)[0] for p in points] + ([suggested[0]] if suggested else [])
    ys = [_sweep_xy(p)[1] for p in points] + ([suggested[1]] if suggested else []) + [0.5]
    x = _linear_scale(*_padded(xs), WIDE_FRAME.x0, WIDE_FRAME.x1)
    y = _linear_scale(*_padded(ys), WIDE_FRAME.y0, WIDE_FRAME.y1)
    params = list(dict.fromkeys(str(p.get("param")) for p in points))
    legend = tuple(_series(i, name) for i, name in enumerate(params))
    body = _sweep_axes(xs, ys, x, y)
    for series in legend:
        of_param = [p for p in points if str(p.get("param")) == series.label]
        body += _sweep_series(of_param, series, x, y)
    body += _sweep_marks(points, suggested, x, y)
    title = "Risk against accuracy for each setting swept"
    marked = _sweep_marked(points, suggested)
    desc = f"Attack AUC against held-out accuracy for {len(points)} setting(s). {marked}"
    svg = _svg("sweep-chart", title, desc.strip(), WIDE_FRAME, body)
    table = sweep_table(points, suggested)
    note = f"{marked} {SWEEP_NOTE}".strip()
    return Chart("sweep-chart", title, desc.strip(), svg, table, legend, note)


def sweep_table(points: list[dict], suggested: tuple | None) -> Table:
    """Each setting's AUC, TPR at 1% FPR and held-out accuracy, the marked ones named."""
    columns = ("Setting", "AUC", "TPR at 1% FPR", "Held-out accuracy", "Marked")
    rows = tuple(
        (
            _setting(p),
            _decimal(p.get("auc")),
            reading.percent(p.get("tpr_at_1pct_fpr")),
            reading.percent(p.get("test_accuracy"), 1),
            _mark(p, suggested),
        )
        for p in points
    )
    return Table("Every setting the sweep attacked.", columns, rows)


def _sweep_xy(point) -> tuple[float, float] | None:
    if not isinstance(point, dict):
        return None
    x, y = _number(point.get("test_accuracy")), _number(point.get("auc"))
    return (x, y) if x is not None and y is not None else None


def _suggested(sweep: dict) -> tuple[float, float, str] | None:
    """Where the recommendation sits and its label, or None when nothing is safer."""
    rec = _dict(sweep.get("recommendation"))
    xy = _sweep_xy(rec)
    if rec.get("param") is None or xy is None:
        return None
    return (*xy, _setting(rec))


def _sweep_axes(xs, ys, x, y) -> list[str]:
    f = WIDE_FRAME
    body = _grid_linear(_ticks(*_padded(xs)), _ticks(*_padded(ys)), x, y, f)
    body.append(_line(f.x0, y(0.5), f.x1, y(0.5), "chart-chance", "#8c959f", "3 3"))
    body.append(_text(f.x1 - 4, y(0.5) - 6, "AUC 0.5: guessing", "chart-note", anchor="end"))
    return body + _axis_labels(f, "Held-out accuracy", "Attack AUC (risk)")


def _sweep_series(points: list[dict], series: Series, x, y) -> list[str]:
    xy = [(x(a), y(b)) for a, b in map(_sweep_xy, points)]
    body = [_path(xy, series, "chart-trail")] if len(xy) > 1 else []
    for p, (px, py) in zip(points, xy):
        tip = escape(f"{_setting(p)}: AUC {_decimal(p.get('auc'))}, accuracy ")
        tip += escape(reading.percent(p.get("test_accuracy"), 1))
        body.append(
            f'<circle class="chart-point" cx="{_n(px)}" cy="{_n(py)}" r="4.5" '
            f'fill="{series.colour}"><title>{tip}</title></circle>'
        )
    return body


def _sweep_marks(points: list[dict], suggested, x, y) -> list[str]:
    body = []
    submitted = next((p for p in points if p.get("is_original")), None)
    if submitted:
        accuracy, auc = _sweep_xy(submitted)
        body += _marker("chart-submitted", x(accuracy), y(auc), "Submitted")
    if suggested:
        body += _marker("chart-recommended", x(suggested[0]), y(suggested[1]), "Suggested")
    return body


def _marker(css: str, px: float, py: float, label: str) -> list[str]:
    """A ring around a point and its label, on the side with room for it."""
    right = px < (WIDE_FRAME.x0 + WIDE_FRAME.x1) / 2
    tx = px + 12 if right else px - 12
    ty = py - 10 if py > WIDE_FRAME.y1 + 24 else py + 20
    return [
        f'<g class="{css}"><circle cx="{_n(px)}" cy="{_n(py)}" r="9" fill="none" '
        f'stroke="#1b1f24" stroke-width="2"/>',
        _text(tx, ty, label, "chart-mark-label", anchor="start" if right else "end") + "</g>",
    ]


def _sweep_marked(points: list[dict], suggested) -> str:
    """The ringed settings named, with their figures: the labels' words in full."""
    submitted = next((p for p in points if p.get("is_original")), None)
    parts = []
    if submitted:
        parts.append(
            f"Submitted: {_setting(submitted)}, AUC {_decimal(submitted.get('auc'))}, "
            f"accuracy {reading.percent(submitted.get('test_accuracy'), 1)}."
        )
    if suggested:
        parts.append(
            f"Suggested: {suggested[2]}, AUC {_decimal(suggested[1])}, "
            f"accuracy {reading.percent(suggested[0], 1)}."
        )
    return " ".join(parts)


def _setting(point: dict) -> str:
    return reading.setting_text(point.get("param"), point.get("value"))


def _mark(point: dict, suggested) -> str:
    marks = ["submitted"] if point.get("is_original") else []
    if suggested and _setting(point) == suggested[2]:
        marks.append("suggested")
    return ", ".join(marks)


# The dashboard -----------------------------------------------------------------

#: The dashboard's activity series: (row key, what people read).
ACTIVITY_SERIES = (
    ("submitted", "Submitted"),
    ("approved", "Approved"),
    ("changes_requested", "Changes requested"),
    ("rejected", "Rejected"),
)


def activity_chart(weeks: list[dict]) -> Chart | None:
    """Requests submitted and decided per week, one line per kind of event.

    ``weeks`` are rows ``{"week": date, "submitted": n, "approved": n, ...}``,
    oldest first, every week of the window present (zeros included).
    """
    if not weeks or not any(w.get(key) for w in weeks for key, _ in ACTIVITY_SERIES):
        return None
    f = WIDE_FRAME
    top = _nice_ceiling(max(int(w.get(key) or 0) for w in weeks for key, _ in ACTIVITY_SERIES))
    span = max(len(weeks) - 1, 1)
    x = _linear_scale(0, span, f.x0 + 8, f.x1 - 8)
    y = _linear_scale(0, top, f.y0, f.y1)
    body = _count_grid(top, y, f) + _week_ticks(weeks, x, f)
    legend = tuple(_series(i, label) for i, (_, label) in enumerate(ACTIVITY_SERIES))
    for (key, _), series in zip(ACTIVITY_SERIES, legend):
        points = [(x(i), y(int(w.get(key) or 0))) for i, w in enumerate(weeks)]
        body.append(_path(points, series, "chart-series"))
        body += [_dot(px, py, series.colour) for px, py in points]
    body += _axis_labels(f, "Week starting", "Requests")
    title = "Requests submitted and decided per week"
    totals = "; ".join(
        f"{label} {sum(int(w.get(key) or 0) for w in weeks)}" for key, label in ACTIVITY_SERIES
    )
    desc = f"Weekly counts over {len(weeks)} weeks, in all: {totals}."
    columns = ("Week starting",) + tuple(label for _, label in ACTIVITY_SERIES)
    rows = tuple(
        (_day(w["week"]),) + tuple(str(int(w.get(key) or 0)) for key, _ in ACTIVITY_SERIES)
        for w in weeks
    )
    table = Table("Requests per week (weeks start on Monday).", columns, rows)
    svg = _svg("activity-chart", title, desc, f, body)
    return Chart("activity-chart", title, desc, svg, table, legend)


def decision_time_chart(bins: list[dict]) -> Chart | None:
    """How long requests waited from submission to a checker's first decision.

    ``bins`` are rows ``{"label": "1–4 h", "count": n}`` in order of waiting time.
    """
    bars = [(str(b["label"]), int(b["count"] or 0), PALETTE[0]) for b in bins]
    return _bar_chart(
        "decision-time-chart",
        "Time from submission to first decision",
        bars,
        x_label="Time to the first decision",
        caption="Requests decided in the window, by how long the first decision took "
        "(h: hours, d: days).",
        head="Time to decision",
    )


def risk_chart(rows: list[dict]) -> Chart | None:
    """Requests at each risk, by the verdict of their newest finished audit.

    ``rows`` are ``{"risk": "low", "count": n}`` in risk order (see risk_distribution).
    """
    bars = [
        (str(r["risk"]), int(r["count"] or 0), RISK_COLOURS.get(r["risk"], UNKNOWN_COLOUR))
        for r in rows
    ]
    return _bar_chart(
        "risk-chart",
        "Requests by risk",
        bars,
        x_label="Risk of the newest finished audit",
        caption="Each request counted once, by the verdict of its newest finished audit.",
        head="Risk",
    )


def _bar_chart(chart_id, title, bars, *, x_label, caption, head) -> Chart | None:
    """Vertical bars with their counts on top; None when every count is zero."""
    if not any(count for _, count, _ in bars):
        return None
    f = WIDE_FRAME
    top = _nice_ceiling(max(count for _, count, _ in bars))
    y = _linear_scale(0, top, f.y0, f.y1)
    slot = (f.x1 - f.x0) / len(bars)
    body = _count_grid(top, y, f)
    for i, (label, count, colour) in enumerate(bars):
        left, middle = f.x0 + i * slot + slot * 0.15, f.x0 + (i + 0.5) * slot
        body.append(
            f'<rect class="chart-bar" x="{_n(left)}" y="{_n(y(count))}" width="{_n(slot * 0.7)}" '
            f'height="{_n(f.y0 - y(count))}" fill="{colour}"><title>{escape(label)}: {count}'
            "</title></rect>"
        )
        body.append(_text(middle, y(count) - 5, str(count), "chart-value", anchor="middle"))
        body.append(_text(middle, f.y0 + 18, label, "chart-tick", anchor="middle"))
    body += _axis_labels(f, x_label, "Requests")
    desc = "; ".join(f"{label}: {count}" for label, count, _ in bars) + "."
    rows = tuple((label, str(count)) for label, count, _ in bars)
    table = Table(caption, (head, "Requests"), rows)
    return Chart(chart_id, title, desc, _svg(chart_id, title, desc, f, body), table)


def _count_grid(top: int, y, f: Frame) -> list[str]:
    body = []
    for value in range(0, top + 1, max(1, round(_tick_step(0, top)))):
        body.append(_line(f.x0, y(value), f.x1, y(value), "chart-grid", "#d0d7de"))
        body.append(_text(f.x0 - 8, y(value) + 4, str(value), "chart-tick", anchor="end"))
    return body


def _week_ticks(weeks: list[dict], x, f: Frame) -> list[str]:
    every = max(1, math.ceil(len(weeks) / 4))  # four labels fit on a phone
    return [
        _text(x(i), f.y0 + 18, _day(w["week"]), "chart-tick", anchor="middle")
        for i, w in enumerate(weeks)
        if i % every == 0
    ]


def _day(day) -> str:
    return f"{day.day} {day:%b}"


# Drawing ---------------------------------------------------------------------------


def _svg(chart_id: str, title: str, desc: str, f: Frame, body: list[str]) -> Svg:
    """The whole chart: scalable (viewBox, width 100%), labelled for screen readers."""
    head = (
        f'<svg class="chart-svg" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(f.width)} '
        f'{_n(f.height)}" width="100%" role="img" aria-labelledby="{chart_id}-title '
        f'{chart_id}-desc" font-family="system-ui, sans-serif" font-size="13" fill="#1b1f24">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>'
    )
    frame = (
        f'<rect class="chart-frame" x="{_n(f.x0)}" y="{_n(f.y1)}" width="{_n(f.x1 - f.x0)}" '
        f'height="{_n(f.y0 - f.y1)}" fill="none" stroke="#8c959f"/>'
    )
    return Svg(head + "".join(body) + frame + "</svg>")


def _path(points: list[tuple[float, float]], series: Series, css: str) -> str:
    d = "M" + " L".join(f"{_n(px)},{_n(py)}" for px, py in points)
    dash = f' stroke-dasharray="{series.dash}"' if series.dash else ""
    return (
        f'<path class="{css}" d="{d}" fill="none" stroke="{series.colour}" stroke-width="2.5"'
        f'{dash} stroke-linejoin="round"><title>{escape(series.label)}</title></path>'
    )


def _dot(px: float, py: float, colour: str) -> str:
    return f'<circle cx="{_n(px)}" cy="{_n(py)}" r="3" fill="{colour}"/>'


def _line(x1, y1, x2, y2, css: str, colour: str, dash: str = "") -> str:
    dash = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line class="{css}" x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" '
        f'stroke="{colour}"{dash}/>'
    )


def _text(x: float, y: float, text: str, css: str, *, anchor: str = "start") -> str:
    """Text with a white halo, so a label stays legible where it crosses a line."""
    return (
        f'<text class="{css}" x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" stroke="#fff" '
        f'stroke-width="3" paint-order="stroke">{escape(text)}</text>'
    )


def _axis_labels(f: Frame, x_label: str, y_label: str) -> list[str]:
    middle_x, middle_y = (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2
    return [
        _text(middle_x, f.height - 10, x_label, "chart-axis", anchor="middle"),
        f'<text class="chart-axis" x="0" y="0" text-anchor="middle" '
        f'transform="translate(16 {_n(middle_y)}) rotate(-90)">{escape(y_label)}</text>',
    ]


def _grid(decades: list[float], x, y, f: Frame) -> list[str]:
    """Log grid lines at each decade on both axes, labelled in percent.

    With many non-members the axes span many decades: at most about five are
    labelled (counting down from 100%), so the labels never overlap.
    """
    body = []
    every = math.ceil(len(decades) / 5)
    for i, d in enumerate(reversed(decades)):
        body.append(_line(x(d), f.y0, x(d), f.y1, "chart-grid", "#d0d7de"))
        body.append(_line(f.x0, y(d), f.x1, y(d), "chart-grid", "#d0d7de"))
        if i % every == 0:
            body.append(_text(x(d), f.y0 + 18, _level(d), "chart-tick", anchor="middle"))
            body.append(_text(f.x0 - 6, y(d) + 4, _level(d), "chart-tick", anchor="end"))
    return body


def _grid_linear(x_ticks: list[float], y_ticks: list[float], x, y, f: Frame) -> list[str]:
    body = []
    for t in x_ticks:
        body.append(_line(x(t), f.y0, x(t), f.y1, "chart-grid", "#d0d7de"))
        body.append(_text(x(t), f.y0 + 18, _level(t), "chart-tick", anchor="middle"))
    for t in y_ticks:
        body.append(_line(f.x0, y(t), f.x1, y(t), "chart-grid", "#d0d7de"))
        body.append(_text(f.x0 - 6, y(t) + 4, f"{t:g}", "chart-tick", anchor="end"))
    return body


def _series(index: int, label: str) -> Series:
    return Series(label, PALETTE[index % len(PALETTE)], DASHES[index % len(DASHES)])


# Scales and numbers --------------------------------------------------------------------


def _log_scale(floor: float, start: float, end: float) -> Callable[[float], float]:
    """Map [floor, 1] on a log axis to [start, end] (values already clipped to it)."""
    low = math.log10(floor)
    return lambda v: start + (math.log10(_clip(v, floor)) - low) / -low * (end - start)


def _linear_scale(low: float, high: float, start: float, end: float) -> Callable[[float], float]:
    span = (high - low) or 1.0
    return lambda v: start + (min(max(v, low), high) - low) / span * (end - start)


def _padded(values: Iterable[float]) -> tuple[float, float]:
    """A range around ``values`` with a margin, rounded out to the tick step."""
    values = list(values)
    low, high = min(values), max(values)
    pad = max((high - low) * 0.08, 0.005)
    step = _tick_step(low - pad, high + pad)
    return math.floor((low - pad) / step) * step, math.ceil((high + pad) / step) * step


def _ticks(low: float, high: float) -> list[float]:
    step = _tick_step(low, high)
    first = math.ceil(low / step - 1e-9)
    count = math.floor(high / step + 1e-9) - first + 1
    return [round((first + i) * step, 10) for i in range(count)]


def _tick_step(low: float, high: float) -> float:
    """The 1, 2 or 5 times a power of ten that puts at most about six ticks on the span."""
    span = (high - low) or 1.0
    magnitude = 10 ** math.floor(math.log10(span / 6))
    return next(m * magnitude for m in (1, 2, 5, 10) if span / (m * magnitude) <= 6)


def _nice_ceiling(value: int) -> int:
    """The smallest tick value at or above ``value``, and at least 1."""
    step = max(_tick_step(0, max(value, 1)), 1)
    return max(int(math.ceil(value / step) * step), 1)


def _n(value: float) -> str:
    """A coordinate to one decimal, never NaN or infinite (the scales clip their input)."""
    if not math.isfinite(value):
        raise ValueError("A chart coordinate must be finite.")
    return f"{value:.1f}".removesuffix(".0")


def _clip(value: float, floor: float) -> float:
    return min(max(value, floor), 1.0)


def _number(value) -> float | None:
    """A finite float, or None for anything else (null, text, NaN, infinity, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _level(value: float) -> str:
    """A round rate for an axis tick or an FPR level: 0.1%, 1%, 10%, 80.5%."""
    return f"{value * 100:.10f}".rstrip("0").rstrip(".") + "%"


def _decimal(value, digits: int = 3) -> str:
    value = _number(value)
    return "n/a" if value is None else f"{value:.{digits}f}"


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class Panel:
    """A dashboard chart under its heading, or the sentence shown when it has no data."""

    heading: str
    chart: Chart | None
    empty: str


def dashboard_charts(*, activity: list[dict], decision_times: list[dict], risks: list[dict]):
    """The dashboard's three trend charts, in the order the page shows them."""
    weeks = len(activity)
    return [
        Panel(
            "Requests per week",
            activity_chart(activity),
            f"No request was submitted or decided in the last {weeks} weeks.",
        ),
        Panel(
            "Time to decision",
            decision_time_chart(decision_times),
            f"No request had its first decision in the last {weeks} weeks.",
        ),
        Panel("Risk mix", risk_chart(risks), "No request has a finished audit yet."),
    ]
