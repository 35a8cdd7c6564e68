"""The audit log at TRE scale (5,000 entries): filtered, sorted, paged, and exported.

The entries are made with ``bulk_create`` as one valid hash chain
(tests/tre_audit/scale.py), so the log verifies as if the services had written them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from types import SimpleNamespace

import pytest
from django.urls import reverse

from tests import factories
from tests.factories import LOGIN, assert_response
from tests.tre_audit.scale import T0, bulk_entries, bulk_requests
from tre_audit.dashboard import selectors
from tre_audit.reviews.enums import Role
from tre_audit.submissions.models import AuditEntry, Project

pytestmark = pytest.mark.django_db

N_ENTRIES = 5000
N_SMALL = 300
#: The most queries one page of the log may take, whatever its length (the chain's
#: verification reads the whole log, in one query, chunk by chunk; the header's inbox
#: count is one more).
MAX_QUERIES = 13
ROW = re.compile(r'<th scope="row" class="num">(\d+)</th>')


def _log(n_entries: int) -> SimpleNamespace:
    admin = factories.create_user("ada", Role.TRE_ADMIN)
    actors = [factories.create_user(f"checker{i}", Role.CHECKER) for i in range(3)]
    authors = [factories.create_user(f"res{i}", Role.RESEARCHER) for i in range(2)]
    projects = [Project.objects.create(name=f"Project {p}") for p in "ABC"]
    submissions = bulk_requests(30, authors=authors, projects=projects)
    entries = bulk_entries(n_entries, submissions=submissions, actors=actors)
    return SimpleNamespace(admin=admin, actors=actors, submissions=submissions, entries=entries)


@pytest.fixture
def log():
    """5,000 entries: for what must hold whatever the log's size."""
    return _log(N_ENTRIES)


@pytest.fixture
def small_log():
    """300 entries: for what does not depend on the size (the export's content)."""
    return _log(N_SMALL)


def _page(client, user, **params) -> str:
    client.force_login(user)
    response = client.get(reverse("dashboard:audit_log"), params)
    assert response.status_code == 200
    return response.content.decode()


def _ids(html: str) -> list[int]:
    return [int(i) for i in ROW.findall(html)]


def test_each_log_page_takes_a_few_queries(client, log, django_assert_max_num_queries):
    client.force_login(log.admin)
    pages = [{}, {"page": "50"}, {"page": "100"}, {"actor": "checker1", "since": "2025-03-04"}]
    for params in pages:
        with django_assert_max_num_queries(MAX_QUERIES):
            response = client.get(reverse("dashboard:audit_log"), params)
        html = response.content.decode()
        assert response.status_code == 200 and len(_ids(html)) == 50, params
        assert "Hash chain intact" in html


def test_pages_run_newest_first_keep_the_filter_and_drop_bad_values(client, log):
    ids = sorted(e.id for e in log.entries)
    first, last = _page(client, log.admin), _page(client, log.admin, page=100)
    assert _ids(first) == ids[::-1][:50] and _ids(last) == ids[:50][::-1]
    assert f"of {N_ENTRIES} entries" in first
    oldest = _page(client, log.admin, sort="date", action="status")
    assert _ids(oldest) == sorted(_ids(oldest))
    assert 'href="?sort=date&amp;action=status&amp;page=2"' in oldest
    for params in ({"request": "x"}, {"request": "9" * 30}, {"action": "drop"}, {"page": "z"}):
        assert f"of {N_ENTRIES} entries" in _page(client, log.admin, **params), params


def test_each_filter_selects_the_right_entries(log):
    target = log.submissions[7]
    cases = {
        "action": ({"action": "status"}, lambda e: e.action == "status"),
        "actor": ({"actor": "CHECKER2"}, lambda e: e.actor == log.actors[2]),
        "request": ({"request": target.pk}, lambda e: e.submission_id == target.pk),
        "author": ({"author": "res1"}, lambda e: e.submission.author.username == "res1"),
        "project": ({"project": "project c"}, lambda e: e.submission.project.name == "Project C"),
        "status": ({"status": "awaiting_review"}, lambda e: e.after == "awaiting_review"),
        "dates": (
            {"since": T0.date().replace(day=4), "until": T0.date().replace(day=4)},
            lambda e: e.created_at.date() == T0.date().replace(day=4),
        ),
        "search": ({"q": "entry 4999"}, lambda e: e.reason == "entry 4999"),
        "number": ({"q": f"#{target.pk}"}, lambda e: e.submission_id == target.pk),
    }
    for name, (filters, wanted) in cases.items():
        found = selectors.audit_entries_filtered(filters=filters).values_list("id", flat=True)
        expected = {e.id for e in log.entries if wanted(e)}
        assert expected, name
        assert set(found) == expected, name


# The export -----------------------------------------------------------------------------


def _export(client, user, fmt, **params):
    client.force_login(user)
    return client.get(reverse("dashboard:audit_log_export", args=[fmt]), params)


def _csv(response) -> tuple[dict, list[dict]]:
    assert response.streaming
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    marker, chain = rows[0]
    assert marker == "# chain"
    header = rows[1]
    return json.loads(chain), [dict(zip(header, row, strict=True)) for row in rows[2:]]


def _jsonl(response) -> tuple[dict, list[dict]]:
    assert response.streaming
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    return lines[0]["chain"], lines[1:]


def test_the_whole_log_exports_as_csv_with_the_chain_first(client, small_log):
    response = _export(client, small_log.admin, "csv")
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    chain, rows = _csv(response)

    assert chain["ok"] is True and chain["n_entries"] == N_SMALL + 1
    assert [int(r["id"]) for r in rows] == [e.id for e in AuditEntry.objects.order_by("id")]
    assert rows[0]["entry_hash"] == small_log.entries[0].entry_hash
    export = rows[-1]  # the export itself, logged before the log was verified
    assert export["action"] == "log-export" and export["actor"] == "ada"
    assert export["reason"] == "csv: the whole log" and chain["export_logged"] is True


def test_a_filtered_export_as_json_lines_has_every_entry_of_the_filter(client, small_log):
    target = small_log.submissions[5]
    chain, rows = _jsonl(
        _export(client, small_log.admin, "jsonl", request=target.pk, action="status")
    )

    expected = [
        e.id for e in small_log.entries if e.submission_id == target.pk and e.action == "status"
    ]
    assert expected and [r["id"] for r in rows] == expected
    assert chain["ok"] is True and chain["filter"] == {
        "request": str(target.pk),
        "action": "status",
    }
    assert set(rows[0]) == {
        "id", "created_at", "actor_id", "actor", "submission_id", "action", "what",
        "before", "after", "reason", "prev_hash", "entry_hash",
    }  # fmt: skip
    logged = AuditEntry.objects.get(action="log-export")
    assert logged.reason == f"jsonl: action=status, request={target.pk}"


def test_a_tampered_entry_makes_the_export_say_broken(client, small_log):
    tampered = small_log.entries[123]
    AuditEntry.objects.filter(id=tampered.id).update(reason="approved by nobody")

    chain, _ = _jsonl(_export(client, small_log.admin, "jsonl"))
    assert chain["ok"] is False and chain["first_bad_id"] == tampered.id
    assert "changed after it was written" in chain["problem"]

    chain, rows = _csv(_export(client, small_log.admin, "csv"))  # the log now refuses appends
    assert chain["ok"] is False and chain["export_logged"] is False
    assert len(rows) == N_SMALL + 1  # the first export was logged, this one could not be


@pytest.mark.parametrize("role, expected", [("checker", 403), ("researcher", 403), (None, LOGIN)])
def test_only_admins_export(client, small_log, role, expected):
    if role is None:
        response = client.get(reverse("dashboard:audit_log_export", args=["csv"]))
    else:
        response = _export(client, factories.create_user(role=role), "csv")
    assert_response(response, expected)
    assert not AuditEntry.objects.filter(action="log-export").exists()


def test_an_unknown_format_is_a_404(client, small_log):
    assert _export(client, small_log.admin, "xlsx").status_code == 404


def test_a_cell_a_spreadsheet_would_run_is_quoted(client, small_log):
    from tre_audit.submissions.services import audit_entry_append

    audit_entry_append(
        submission=None, action="comment", by=small_log.admin, reason="=HYPERLINK(1)"
    )
    _, rows = _csv(_export(client, small_log.admin, "csv", action="comment", actor="ada"))
    assert [r["reason"] for r in rows] == ["'=HYPERLINK(1)"]
