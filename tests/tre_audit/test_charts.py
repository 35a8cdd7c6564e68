"""The server-drawn charts (tre_audit.charts) and the request page that shows them."""

from __future__ import annotations

import copy
import math
import re
import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse

from attacks import reading
from tests.attacks.report_fixture import sample_report
from tests.tre_audit.dashboard.helpers import audited, submitted_request
from tre_audit import charts

SVG = "{http://www.w3.org/2000/svg}"
POINT = re.compile(r"[ML](-?[\d.]+),(-?[\d.]+)")


def _svg(chart: charts.Chart) -> ET.Element:
    return ET.fromstring(str(chart.svg))


def _curves(chart: charts.Chart) -> list[ET.Element]:
    return [p for p in _svg(chart).iter(f"{SVG}path") if p.get("class") == "chart-series"]


def _vertices(path: ET.Element) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in POINT.findall(path.get("d"))]


def _floor_line(chart: charts.Chart) -> ET.Element:
    return next(e for e in _svg(chart).iter(f"{SVG}line") if e.get("class") == "chart-floor")


def _ran(report: dict) -> list[dict]:
    return [a for a in report["attacks"] if not a["error"]]


def _with_roc(fpr: list, tpr: list, *, n_non_members: int = 500) -> dict:
    report = sample_report()
    report["data"]["n_non_members"] = n_non_members
    report["attacks"] = [_ran(report)[0] | {"roc": {"fpr": fpr, "tpr": tpr}}]
    return report


# ROC curves --------------------------------------------------------------------


def test_the_roc_chart_draws_one_curve_per_attack_that_ran():
    report = sample_report()
    chart = charts.roc_chart(report)

    ran = [a["title"] for a in _ran(report)]
    assert len(ran) == 4 and len(report["attacks"]) == 5  # one attack failed
    assert [p.find(f"{SVG}title").text for p in _curves(chart)] == ran
    assert [s.label for s in chart.legend] == ran
    assert len({s.colour for s in chart.legend}) == len(ran)


def test_the_svg_is_labelled_for_screen_readers_and_scales():
    svg = _svg(charts.roc_chart(sample_report()))

    assert svg.get("role") == "img" and svg.get("width") == "100%"
    assert svg.get("viewBox") == "0 0 448 420"
    title, desc = (svg.find(f"{SVG}{tag}") for tag in ("title", "desc"))
    assert svg.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    assert "1/N = 0.20%" in desc.text and "LiRA (online): AUC 0.921" in desc.text


def test_every_curve_point_is_inside_the_plot_box():
    frame = charts.ROC_FRAME
    for path in _curves(charts.roc_chart(sample_report())):
        for x, y in _vertices(path):
            assert frame.x0 <= x <= frame.x1 and frame.y1 <= y <= frame.y0


@pytest.mark.parametrize(
    ("n_non_members", "axis_floor"), [(500, 1e-3), (40, 1e-2), (1000, 1e-4), (3, 0.1)]
)
def test_the_1_over_n_line_sits_at_1_over_n_on_the_log_axis(n_non_members, axis_floor):
    report = sample_report()
    report["data"]["n_non_members"] = n_non_members
    chart = charts.roc_chart(report)

    frame = charts.ROC_FRAME
    share = (math.log10(1 / n_non_members) - math.log10(axis_floor)) / -math.log10(axis_floor)
    line = _floor_line(chart)
    assert float(line.get("x1")) == float(line.get("x2"))
    assert float(line.get("x1")) == pytest.approx(frame.x0 + share * (frame.x1 - frame.x0), abs=0.1)
    assert chart.table.caption.endswith(f"1/N = {reading.percent(1 / n_non_members)}: "
                                        "no rate below it can be measured.")  # fmt: skip


def test_a_large_audit_labels_at_most_five_decades():
    report = sample_report()
    report["data"]["n_non_members"] = 10_000_000
    ticks = [t.text for t in _svg(charts.roc_chart(report)).iter(f"{SVG}text")]

    labels = [t for t in ticks if t.endswith("%")]
    assert labels[::2] == ["100%", "1%", "0.01%", "0.0001%", "0.000001%"]  # of 9 decades
    assert labels[1::2] == labels[::2]  # each on both axes


def test_a_curve_is_drawn_in_full_from_the_axis_floor_to_the_top_right_corner():
    """FPR 0 has no place on a log axis: the curve starts where it crosses the floor."""
    chart = charts.roc_chart(_with_roc([0.0, 0.002, 0.5, 1.0], [0.0, 0.04, 0.9, 1.0]))

    (path,) = _curves(chart)
    frame = charts.ROC_FRAME
    (x_start, y_start), (x_end, y_end) = _vertices(path)[0], _vertices(path)[-1]
    assert (x_start, x_end, y_end) == (frame.x0, frame.x1, frame.y1)
    # (0, 0) to (0.2%, 4%) crosses the 0.1% floor (axes from 0.1% to 100%) at TPR 2%.
    y_two_percent = frame.y0 - (math.log10(0.02) + 3) / 3 * (frame.y0 - frame.y1)
    assert y_start == pytest.approx(y_two_percent, abs=0.1)


def test_a_curve_stored_without_its_ends_still_runs_corner_to_corner():
    chart = charts.roc_chart(_with_roc([0.01, 0.2, 0.5], [0.3, 0.6, 0.8]))

    vertices = _vertices(_curves(chart)[0])
    frame = charts.ROC_FRAME
    assert vertices[0][0] == frame.x0 and vertices[-1] == (frame.x1, frame.y1)


def test_a_long_curve_is_thinned_to_a_bounded_number_of_points_and_keeps_both_ends():
    n = 5_000
    fpr = [i / n for i in range(n + 1)]
    tpr = [min(1.0, math.sqrt(f)) for f in fpr]
    chart = charts.roc_chart(_with_roc(fpr, tpr, n_non_members=n))

    vertices = _vertices(_curves(chart)[0])
    assert 100 < len(vertices) <= charts.MAX_CURVE_POINTS
    assert vertices[0][0] == charts.ROC_FRAME.x0
    assert vertices[-1] == (charts.ROC_FRAME.x1, charts.ROC_FRAME.y1)
    assert [x for x, _ in vertices] == sorted(x for x, _ in vertices)


def test_no_nan_or_infinity_reaches_the_svg():
    nan, inf = float("nan"), float("inf")
    report = _with_roc([0.0, nan, 0.01, inf, 1.0, -1.0], [0.0, 0.5, 0.2, 0.3, 1.0, 0.1])
    report["attacks"][0]["auc"] = nan
    svg = str(charts.roc_chart(report).svg)

    assert not re.search(r"nan|inf", svg, re.IGNORECASE)
    assert all(math.isfinite(float(v)) for v in re.findall(r"-?\d+\.?\d*", svg))


def test_an_attack_title_with_markup_stays_text():
    report = sample_report()
    report["attacks"][0]["title"] = '<script>alert("x")</script> & co'
    chart = charts.roc_chart(report)

    assert "<script" not in chart.svg and "&lt;script&gt;" in chart.svg
    assert _curves(chart)[0].find(f"{SVG}title").text == '<script>alert("x")</script> & co'
    assert chart.legend[0].label == report["attacks"][0]["title"]  # the template escapes it


def test_the_table_behind_lists_the_reports_numbers():
    report = sample_report()
    table = charts.roc_chart(report).table

    assert table.columns == ("Attack", "AUC", "TPR at 0.1% FPR", "TPR at 1% FPR", "TPR at 10% FPR")
    for attack, row in zip(_ran(report), table.rows, strict=True):
        assert row[0] == attack["title"]
        assert float(row[1]) == pytest.approx(attack["auc"], abs=5e-4)
        assert row[2] == f"n/a: {reading.unresolved_text({}, '0.001')}"  # 0.1% < 1/500
        for level, cell in (("0.01", row[3]), ("0.1", row[4])):
            assert cell == reading.percent(attack["tpr_at_fpr"][level])


def test_a_rate_hidden_by_tied_scores_says_so_in_the_table():
    report = sample_report()
    tie = {"reason": "tie", "tied_members": 3, "tied_non_members": 4, "tpr_range": [0.1, 0.2]}
    report["attacks"][0] |= {"tpr_at_fpr": {"0.01": None}, "tpr_unresolved": {"0.01": tie}}

    row = charts.roc_chart(report).table.rows[0]

    assert row[3].startswith("n/a: a tie: 3 members and 4 non-members get the same score")
    assert row[3].endswith("between 10% and 20% depending on how the tie is broken")


@pytest.mark.parametrize(
    "report",
    [
        None,
        {},
        {"attacks": "not a list"},
        {"attacks": [{"title": "X", "error": "failed", "roc": None}]},
        {"attacks": [{"title": "X", "error": None, "roc": {"fpr": [0, 1], "tpr": [0]}}]},
        {"attacks": [{"title": "X", "error": None, "roc": {"fpr": ["a", "b"], "tpr": [0, 1]}}]},
    ],
)
def test_no_report_or_no_curve_gives_no_chart(report):
    assert charts.report_charts(report)["roc"] is None


# The sweep ----------------------------------------------------------------------


def _circle(element: ET.Element) -> tuple[float, float]:
    circle = element if element.tag == f"{SVG}circle" else element.find(f"{SVG}circle")
    return float(circle.get("cx")), float(circle.get("cy"))


def _group(chart: charts.Chart, css: str) -> ET.Element | None:
    return next((g for g in _svg(chart).iter(f"{SVG}g") if g.get("class") == css), None)


def _point_at(chart: charts.Chart, setting: str) -> tuple[float, float]:
    points = [c for c in _svg(chart).iter(f"{SVG}circle") if c.get("class") == "chart-point"]
    return next(_circle(c) for c in points if c.find(f"{SVG}title").text.startswith(setting + ":"))


def test_the_sweep_chart_marks_the_submitted_and_the_suggested_setting():
    chart = charts.sweep_chart(sample_report()["sweep"])

    submitted, suggested = (_group(chart, c) for c in ("chart-submitted", "chart-recommended"))
    assert _circle(submitted) == _point_at(chart, "min_samples_leaf=1")
    assert _circle(suggested) == _point_at(chart, "min_samples_leaf=10")
    assert submitted.find(f"{SVG}text").text == "Submitted"
    assert suggested.find(f"{SVG}text").text == "Suggested"
    assert chart.note.startswith(
        "Submitted: min_samples_leaf=1, AUC 0.842, accuracy 81.2%. "
        "Suggested: min_samples_leaf=10, AUC 0.603, accuracy 80.5%. Lower is safer"
    )
    assert [s.label for s in chart.legend] == ["min_samples_leaf", "max_depth"]


def test_lower_risk_is_drawn_lower_and_higher_accuracy_further_right():
    chart = charts.sweep_chart(sample_report()["sweep"])

    (x_leaf_20, y_leaf_20), (x_leaf_1, y_leaf_1) = (
        _point_at(chart, f"min_samples_leaf={v}") for v in (20, 1)
    )
    assert y_leaf_20 > y_leaf_1  # AUC 0.561 below 0.842 (SVG y grows downwards)
    assert x_leaf_20 < x_leaf_1  # accuracy 0.793 left of 0.812


def test_the_sweep_table_names_each_setting_and_the_marked_ones():
    sweep = sample_report()["sweep"]
    table = charts.sweep_chart(sweep).table

    assert [row[0] for row in table.rows] == [
        reading.setting_text(p["param"], p["value"]) for p in sweep["points"]
    ]
    marked = {row[0]: row[4] for row in table.rows if row[4]}
    assert marked == {"min_samples_leaf=1": "submitted", "min_samples_leaf=10": "suggested"}
    assert table.rows[2][1:4] == ("0.603", "3.6%", "80.5%")


def test_a_sweep_without_a_safer_setting_marks_only_the_submitted_one():
    sweep = sample_report()["sweep"] | {"recommendation": {"param": None, "text": "none"}}
    chart = charts.sweep_chart(sweep)

    assert _group(chart, "chart-submitted") is not None
    assert _group(chart, "chart-recommended") is None
    assert "Suggested" not in chart.desc


@pytest.mark.parametrize(
    "sweep", [None, {}, {"points": []}, {"points": [{"param": "x", "auc": None}]}]
)
def test_no_sweep_or_no_scored_setting_gives_no_chart(sweep):
    assert charts.sweep_chart(sweep) is None


# The dashboard's charts (their selectors: tests/tre_audit/dashboard/test_charts.py) --------


def test_bars_are_as_tall_as_their_counts():
    rows = [
        {"risk": "low", "count": 2},
        {"risk": "medium", "count": 0},
        {"risk": "high", "count": 4},
    ]
    chart = charts.risk_chart(rows)

    bars = [r for r in _svg(chart).iter(f"{SVG}rect") if r.get("class") == "chart-bar"]
    heights = [float(b.get("height")) for b in bars]
    assert heights[1] == 0 and heights[2] == pytest.approx(2 * heights[0], abs=0.1)
    assert [b.get("fill") for b in bars] == [charts.RISK_COLOURS[r["risk"]] for r in rows]
    assert chart.table.rows == (("low", "2"), ("medium", "0"), ("high", "4"))


def test_charts_of_nothing_are_not_drawn():
    week = {"week": None, "submitted": 0, "approved": 0, "rejected": 0, "changes_requested": 0}
    assert charts.activity_chart([week]) is None
    assert charts.decision_time_chart([{"label": "under 1 h", "count": 0}]) is None
    assert charts.risk_chart([{"risk": "low", "count": 0}]) is None


# The request page ----------------------------------------------------------------


@pytest.mark.django_db
def test_the_request_page_shows_the_charts_with_their_tables(client):
    report = copy.deepcopy(sample_report())
    report["attacks"][0]["title"] = "<b>Shadow</b>"
    submission = audited(submitted_request(), report=report)
    client.force_login(submission.author)

    page = client.get(reverse("submissions:detail", args=[submission.pk])).content.decode()

    for chart_id in ("roc-chart", "sweep-chart"):
        figure = page[page.index(f'id="{chart_id}-figure"') :].split("</figure>")[0]
        assert '<svg class="chart-svg"' in figure and f'aria-labelledby="{chart_id}-title' in figure
        assert "<summary>Data behind the chart</summary>" in figure and "<table>" in figure
    assert page.count("&lt;b&gt;Shadow&lt;/b&gt;") >= 3  # curve title, legend, table
    assert "<b>Shadow</b>" not in page
    assert "style=" not in page


@pytest.mark.django_db
def test_a_request_not_yet_audited_shows_no_chart(client):
    submission = submitted_request()
    client.force_login(submission.author)

    page = client.get(reverse("submissions:detail", args=[submission.pk])).content.decode()

    assert 'id="report-charts"' not in page and "chart-svg" not in page
