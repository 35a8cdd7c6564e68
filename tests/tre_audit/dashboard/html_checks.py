"""Small accessibility checks on rendered HTML: labels, table headers, heading order."""

from __future__ import annotations

from html.parser import HTMLParser

FIELDS = {"input", "textarea", "select"}
UNLABELLED_INPUTS = {"hidden", "submit", "button", "reset"}


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.label_for: set[str] = set()
        self.fields: list[tuple[dict, bool]] = []  # attributes, inside a <label>
        self.headings: list[int] = []
        self.th_without_scope = 0
        self._open_labels = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "label":
            self._open_labels += 1
            if attrs.get("for"):
                self.label_for.add(attrs["for"])
        elif tag in FIELDS and attrs.get("type") not in UNLABELLED_INPUTS:
            self.fields.append((attrs, self._open_labels > 0))
        elif tag == "th" and not attrs.get("scope"):
            self.th_without_scope += 1
        elif len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
            self.headings.append(int(tag[1]))

    def handle_endtag(self, tag):
        if tag == "label":
            self._open_labels -= 1


def accessibility_problems(html: str) -> list[str]:
    """What a screen-reader user would trip over; empty when the page is fine."""
    page = _Collector()
    page.feed(html)
    problems = [
        f"{attrs.get('name')} has no label"
        for attrs, wrapped in page.fields
        if not wrapped and attrs.get("id") not in page.label_for and not attrs.get("aria-label")
    ]
    if page.th_without_scope:
        problems.append(f"{page.th_without_scope} table header(s) without scope")
    if page.headings.count(1) != 1:
        problems.append(f"{page.headings.count(1)} h1 headings")
    for before, after in zip(page.headings, page.headings[1:]):
        if after > before + 1:
            problems.append(f"heading level jumps from h{before} to h{after}")
    return problems
