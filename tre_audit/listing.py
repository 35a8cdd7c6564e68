"""One filtered, sorted, paginated listing, shared by every list page.

A form reads the page's GET parameters: a bad value is dropped (and said next to its
field), never a 500. The selector turns the valid values into one query; Django's
``Paginator`` counts it in the database and makes rows of one page only, so a page
takes the same handful of queries whether the list holds ten rows or ten thousand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django import forms
from django.core.paginator import Page, Paginator
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.http import QueryDict

from attacks.reading import RISKS

#: Rows on one page: a screen or two of a table.
PER_PAGE = 50

#: What a ``fields`` entry of ``listing_filter`` is: a lookup, or a function of the value.
Lookup = str | Callable[[object], Q]


class Rows:
    """A queryset that yields rows (dicts) when sliced or iterated.

    The paginator counts it with one ``COUNT`` and slices one page, so only that page
    is read and turned into rows.
    """

    def __init__(self, queryset: QuerySet, to_row: Callable[[object], dict]):
        self.queryset = queryset
        self.to_row = to_row

    def count(self) -> int:
        return self.queryset.count()

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.to_row(item) for item in self.queryset[index]]
        return self.to_row(self.queryset[index])

    def __iter__(self) -> Iterator[dict]:
        return (self.to_row(item) for item in self.queryset)


class SortField(forms.ChoiceField):
    """The sort menu: a page without a valid sort shows the one it is listed by (the
    default), so the menu says what the table does and Apply keeps that order."""

    def bound_data(self, data, initial):
        return data if data and self.valid_value(data) else initial


class ListingForm(forms.Form):
    """The filters every list offers; a list's form adds its own and names its sorts.

    ``sorts`` are the column names a user may sort by (``-`` before one: descending);
    anything else falls back to ``default_sort``.
    """

    sorts: tuple[str, ...] = ("date", "status", "risk", "title")
    default_sort = "-date"

    q = forms.CharField(label="Search", required=False, max_length=200)
    author = forms.CharField(label="Author (username)", required=False, max_length=150)
    project = forms.CharField(label="Project", required=False, max_length=200)
    since = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    sort = SortField(label="Sort by", required=False)

    def __init__(self, data: QueryDict | None = None, **kwargs):
        super().__init__(data if data is not None else QueryDict(), **kwargs)
        self.fields["sort"].choices = [
            (f"{way}{name}", f"{name.capitalize()}, {words}")
            for name in self.sorts
            for way, words in (("", "ascending"), ("-", "descending"))
        ]
        self.fields["sort"].initial = self.default_sort

    def filters(self) -> dict:
        """The valid, non-empty filter values (a bad one is left out)."""
        self.is_valid()
        values = {k: v for k, v in self.cleaned_data.items() if v not in (None, "", False)}
        values.pop("sort", None)
        return values

    def sort_value(self) -> str:
        self.is_valid()
        return self.cleaned_data.get("sort") or self.default_sort


@dataclass(frozen=True)
class Listing:
    """One page of a list, with the form that filtered it and the query string to keep."""

    form: ListingForm
    page: Page
    rows: list
    query: str  # the filters and sort, urlencoded, without the page number

    @property
    def sort(self) -> str:
        return self.form.sort_value()

    @property
    def sort_links(self) -> dict[str, dict]:
        """Per sortable column: the query string that sorts by it (the other way round if it
        is the current sort) and the ``aria-sort`` value of its header."""
        current = self.sort
        links = {}
        for name in self.form.sorts:
            ascending = current == name
            query = QueryDict(self.query, mutable=True)
            query["sort"] = f"-{name}" if ascending else name
            state = {name: "ascending", f"-{name}": "descending"}.get(current, "none")
            links[name] = {"query": query.urlencode(), "aria": state}
        return links


def listing_page(*, form: ListingForm, rows, page: str | None, per_page: int = PER_PAGE):
    """The ``page``-th page of ``rows`` (a bad or too large number gives the last or first)."""
    paginator = Paginator(rows, per_page)
    current = paginator.get_page(page)
    query = form.data.copy() if form.is_bound else QueryDict(mutable=True)
    query.pop("page", None)
    return Listing(form=form, page=current, rows=list(current.object_list), query=query.urlencode())


def listing_filter(queryset: QuerySet, *, filters: dict, fields: dict[str, Lookup]) -> QuerySet:
    """``queryset`` narrowed by each filter that ``fields`` maps to a lookup or a Q."""
    for name, value in filters.items():
        lookup = fields.get(name)
        if lookup is None:
            continue
        queryset = queryset.filter(lookup(value) if callable(lookup) else Q(**{lookup: value}))
    return queryset


def listing_order(sort: str, *, columns: dict[str, object], tie: str = "pk") -> list:
    """ORDER BY for ``sort`` (``name`` or ``-name``), empty values last either way."""
    descending = sort.startswith("-")
    column = columns.get(sort.lstrip("-"))
    if column is None:
        return []
    expression = F(column) if isinstance(column, str) else column
    direction = "desc" if descending else "asc"
    tie_break = F(tie).desc() if descending else F(tie).asc()
    return [getattr(expression, direction)(nulls_last=True), tie_break]


def search_q(value: str, *, title: str, number: str) -> Q:
    """Free text: in the title, or the request number itself ("12" or "#12")."""
    found = Q(**{f"{title}__icontains": value})
    digits = value.strip().lstrip("#")
    if digits.isdigit() and len(digits) <= 12:  # a longer number overflows the column
        found |= Q(**{number: int(digits)})
    return found


def choice_rank(field: str, values) -> Case:
    """The position of ``field``'s value in ``values``, to sort in that order."""
    return Case(*(When(**{field: value}, then=Value(i)) for i, value in enumerate(values)))


def risk_rank(field: str) -> Case:
    """Low < medium < high, so a risk sorts by severity rather than alphabetically."""
    return choice_rank(field, RISKS)


def risk_choices() -> list[tuple[str, str]]:
    return [("", "Any")] + [(risk, risk.capitalize()) for risk in RISKS]
