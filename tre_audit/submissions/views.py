"""Researchers' pages: submit, follow the audit, read the report, act on the request."""

from __future__ import annotations

import io

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from attacks.audit import Upload
from tre_audit import charts
from tre_audit.listing import listing_page
from tre_audit.reviews import selectors as review_selectors
from tre_audit.reviews import services as review_services
from tre_audit.reviews.enums import Role
from tre_audit.reviews.forms import CommentForm, ReleaseForm, ReviewForm
from tre_audit.serving import selectors as serving_selectors
from tre_audit.serving import services as serving_services
from tre_audit.submissions import record_queries, selectors, services
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.exceptions import NotAllowed, SubmissionError, UploadRefused
from tre_audit.submissions.forms import (
    NewVersionForm,
    ReasonForm,
    RecordQueryForm,
    SubmissionForm,
    SubmissionListForm,
    WithdrawForm,
)
from tre_audit.submissions.kept import kept_clear, kept_get, kept_put
from tre_audit.submissions.models import AuditRun, RecordQuery, Submission


def _visible(request, submission_id: int) -> Submission:
    try:
        return selectors.submission_get_visible(user=request.user, submission_id=submission_id)
    except NotAllowed:
        raise Http404("There is no request with that number you can see.") from None


@login_required
def home(request):
    roles = selectors.user_roles(request.user)
    if Role.TRE_ADMIN in roles:
        return redirect("dashboard:index")
    if Role.CHECKER in roles:
        return redirect("reviews:queue")
    return redirect("submissions:list")


@login_required
def submission_list(request):
    form = SubmissionListForm(request.GET)
    rows = selectors.submission_rows(
        user=request.user, filters=form.filters(), sort=form.sort_value()
    )
    listing = listing_page(form=form, rows=rows, page=request.GET.get("page"))
    return render(request, "submissions/list.html", {"listing": listing})


#: The form a page's fragment scrolls to when it comes back with an error.
CREATE_FORM_ID = "submit-form"


@login_required
def submission_create(request):
    if Role.RESEARCHER not in selectors.user_roles(request.user):
        raise PermissionDenied("Only researchers submit models.")
    kept = kept_get(request.session, key="create")
    form = SubmissionForm(request.POST or None, request.FILES or None, user=request.user, kept=kept)
    if request.method == "POST":
        submission = _submission_create(request, form)
        if submission is not None:
            kept_clear(request.session, key="create")
            messages.success(request, "Submitted: the audit has been queued.")
            return redirect(submission)
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "form_id": CREATE_FORM_ID}
    return render(request, "submissions/create.html", context, status=status)


def _submission_create(request, form: SubmissionForm) -> Submission | None:
    """The new request, or None with the form's errors (its good files kept for the next try)."""
    if not form.is_valid():
        _keep(request, form, key="create")
        return None
    data = form.cleaned_data
    try:
        return services.submission_create(
            author=request.user,
            title=data["title"],
            label=data["label"],
            project=data["project"],
            declaration=services.Declaration(
                **{k: data[k] for k in services.Declaration.__dataclass_fields__}
            ),
            **form.uploads(),
        )
    except UploadRefused as exc:
        _files_refused(request, form, key="create", refusal=str(exc))
    except SubmissionError as exc:  # e.g. a project the author is not in: the files were fine
        _keep(request, form, key="create")
        form.add_error(None, str(exc))
    return None


@login_required
def declaration_format(request):
    """How to declare a neural network's layers and recipe (the upload forms link here)."""
    return render(
        request, "submissions/declaration_format.html", {"format": selectors.declaration_format()}
    )


def _keep(request, form, *, key: str) -> None:
    """The form failed: keep the files that passed their own checks for the next post
    (and forget a kept optional one the post said not to send)."""
    form.keep(kept_put(request.session, key=key, uploads=form.arrived, dropped=form.dropped))


def _files_refused(request, form, *, key: str, refusal: str) -> None:
    """The intake check refused a file, without saying which: none of them is kept."""
    kept_clear(request.session, key=key)
    form.keep({})
    form.add_error(None, f"{refusal} Choose the files again.")


@login_required
def submission_detail(request, submission_id: int):
    submission = _visible(request, submission_id)
    return render(request, "submissions/detail.html", _detail_context(request, submission))


def _detail_context(request, submission: Submission) -> dict:
    user = request.user
    run = review_services.current_run(submission)
    latest = submission.runs.filter(version=submission.version).first()
    is_author = submission.author_id == user.pk
    acts_for = selectors.user_is_author_or_admin(user, submission)
    titles = selectors.finding_titles(run.report if run else None)
    return {
        "submission": submission,
        "run": run,
        "latest": latest,
        "report": selectors.report_view(run.report if run else None),
        "charts": charts.report_charts(run.report if run else None),
        "reviews": [
            {"review": r, "evidence": [titles.get(e, e) for e in r.evidence]}
            for r in review_selectors.review_list_visible_to(user=user, submission=submission)
        ],
        "run_progress": selectors.run_progress(run=latest, now=timezone.now()),
        "comments": [
            {"comment": c, "finding": titles.get(c.finding, c.finding)}
            for c in review_selectors.comment_list_visible_to(user=user, submission=submission)
        ],
        "versions": selectors.version_compare(submission=submission),
        "version_history": review_selectors.version_history_visible_to(
            user=user, submission=submission
        ),
        "declaration_changed": selectors.declaration_changes(submission=submission),
        "changes_asked": review_selectors.changes_requested_for(user=user, submission=submission),
        "files": submission.files.filter(version=submission.version).select_related("stored"),
        "is_running": submission.status in (Status.SUBMITTED, Status.AUDITING),
        "user_can_review": review_services.user_can_review(user, submission),
        "user_can_comment": review_services.user_can_comment(user, submission),
        "user_can_new_version": is_author and submission.status in services.NEW_VERSION_FROM,
        "user_can_withdraw": is_author
        and Status.WITHDRAWN in services.TRANSITIONS[submission.status],
        "user_can_retry": submission.status == Status.AUDIT_FAILED and acts_for,
        "user_can_stop": latest is not None
        and latest.status in (RunStatus.QUEUED, RunStatus.RUNNING)
        and Role.TRE_ADMIN in selectors.user_roles(user),
        "user_can_release": review_services.user_can_release(user, submission),
        "pending_sign_offs": review_services.pending_sign_offs(submission)
        if submission.status == Status.APPROVED
        else [],
        "user_can_download_bundle": submission.release_bundle_id is not None and acts_for,
        "endpoints": list(submission.endpoints.order_by("-created_at")) if acts_for else [],
        "serving": _serving_view(request, submission) if acts_for else None,
        "user_can_deploy": serving_services.user_can_deploy(user, submission),
        "new_version_form": NewVersionForm(
            submission=submission, kept=kept_get(request.session, key=f"version-{submission.pk}")
        ),
        "withdraw_form": WithdrawForm(),
        "review_form": ReviewForm(findings=titles),
        "comment_form": CommentForm(findings=titles),
        "release_form": ReleaseForm(),
        "titles": titles,
        "record_queries": _record_query_section(user, run),
        "trail": review_selectors.audit_trail_visible_to(user=user, submission=submission),
    }


def _serving_view(request, submission: Submission) -> dict:
    endpoints = list(submission.endpoints.order_by("-created_at"))
    return serving_selectors.serving_view(
        submission=submission, endpoints=endpoints, server_url=request.build_absolute_uri("/")
    )


@login_required
def submission_progress(request, submission_id: int):
    """The audit's progress, polled by the detail page."""
    submission = _visible(request, submission_id)
    run = submission.runs.filter(version=submission.version).first()
    return JsonResponse(
        {
            "status": submission.status,
            "status_label": submission.get_status_display(),
            **selectors.run_progress(run=run, now=timezone.now()),
        }
    )


def _report_run(request, submission: Submission) -> AuditRun:
    run_id = request.GET.get("run")
    runs = submission.runs.filter(status=RunStatus.DONE)
    run = runs.filter(pk=run_id).first() if run_id and run_id.isdigit() else None
    run = run or review_services.current_run(submission)
    if run is None or run.report is None:
        raise Http404("This request has no finished audit yet.")
    return run


@login_required
def report_pdf(request, submission_id: int):
    submission = _visible(request, submission_id)
    run = _report_run(request, submission)
    data = services.file_read(stored=run.report_pdf)
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = (
        f'inline; filename="request-{submission.pk}-v{run.version}-report.pdf"'
    )
    return response


@login_required
def report_json(request, submission_id: int):
    submission = _visible(request, submission_id)
    run = _report_run(request, submission)
    response = HttpResponse(
        record_queries.report_with_record_queries(run), content_type="application/json"
    )
    response["Content-Disposition"] = (
        f'attachment; filename="request-{submission.pk}-v{run.version}-report.json"'
    )
    return response


@login_required
def submission_compare(request, submission_id: int):
    submission = _visible(request, submission_id)
    rows = selectors.version_compare(submission=submission)
    return render(
        request,
        "submissions/compare.html",
        {"submission": submission, "rows": rows, "diffs": selectors.version_diffs(rows=rows)},
    )


@login_required
@require_POST
def submission_new_version(request, submission_id: int):
    submission = _visible(request, submission_id)
    key = f"version-{submission.pk}"
    form = NewVersionForm(
        request.POST, request.FILES, submission=submission, kept=kept_get(request.session, key=key)
    )
    if not form.is_valid():
        if submission.author_id == request.user.pk:  # no one else's files are stored
            _keep(request, form, key=key)
    else:
        data = form.cleaned_data
        try:
            services.submission_new_version(
                submission=submission,
                by=request.user,
                note=data["note"],
                declared={name: data[name] for name in services.NEW_VERSION_DECLARED},
                **form.uploads(),
            )
        except NotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        except UploadRefused as exc:
            _files_refused(request, form, key=key, refusal=str(exc))
        except SubmissionError as exc:
            form.add_error(None, str(exc))
        else:
            kept_clear(request.session, key=key)
            messages.success(request, "New version stored: the audit has been queued again.")
            return redirect(submission)
    context = _detail_context(request, submission) | {"new_version_form": form}
    return render(request, "submissions/detail.html", context, status=400)


@login_required
@require_POST
def submission_withdraw(request, submission_id: int):
    submission = _visible(request, submission_id)
    form = WithdrawForm(request.POST)
    if not form.is_valid():
        if submission.author_id != request.user.pk:
            raise PermissionDenied("Only the author can withdraw a request.")
        context = _detail_context(request, submission) | {"withdraw_form": form}
        return render(request, "submissions/detail.html", context, status=400)
    try:
        services.submission_withdraw(
            submission=submission, by=request.user, reason=form.cleaned_data["reason"]
        )
    except NotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except SubmissionError as exc:
        messages.error(request, str(exc), extra_tags="change")
    else:
        messages.success(request, "The request was withdrawn.", extra_tags="change")
    return redirect(f"{submission.get_absolute_url()}#change")


@login_required
@require_POST
def audit_run_retry(request, submission_id: int):
    submission = _visible(request, submission_id)
    try:
        services.audit_run_retry(submission=submission, by=request.user)
    except NotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except SubmissionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "The audit has been queued again.")
    return redirect(submission)


@login_required
@require_POST
def audit_run_stop(request, run_id: int):
    """A TRE admin stops a queued or running audit (from the request page or the dashboard)."""
    run = AuditRun.objects.filter(id=run_id).first()
    if run is None:
        raise Http404("There is no audit run with that number.")
    submission = _visible(request, run.submission_id)
    form = ReasonForm(request.POST)
    try:
        if not form.is_valid():
            raise SubmissionError("Say why you stop the audit.")
        services.audit_run_stop(run=run, by=request.user, reason=form.cleaned_data["reason"])
    except NotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except SubmissionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Audit run #{run.id} was stopped.")
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return redirect(back)
    return redirect(submission)


@login_required
def release_bundle(request, submission_id: int):
    submission = _visible(request, submission_id)
    if not selectors.user_is_author_or_admin(request.user, submission):
        raise PermissionDenied("Only the author or a TRE admin can download the release.")
    if submission.release_bundle is None:
        raise Http404("This request has not been released.")
    data = services.file_read(stored=submission.release_bundle)
    return FileResponse(
        io.BytesIO(data),
        as_attachment=True,
        filename=f"request-{submission.pk}-v{submission.version}-release.zip",
        content_type="application/zip",
    )


def _record_query_section(user, run: AuditRun | None, form: RecordQueryForm | None = None) -> dict:
    """What the "Ask about one record" part of the request page shows of ``run``."""
    return {
        "run": run,
        "rows": record_queries.record_query_rows(run=run),
        "user_can_ask": record_queries.user_can_ask_record(user, run),
        "user_can_show_values": record_queries.user_can_show_record_values(user),
        "form": form or RecordQueryForm(),
    }


@login_required
@require_POST
def record_query_create(request, submission_id: int):
    """Ask whether one record was in the training set of the run shown (``?run=``)."""
    submission = _visible(request, submission_id)
    run = _report_run(request, submission)
    form = RecordQueryForm(request.POST, request.FILES)
    if form.is_valid():
        record = form.cleaned_data["record"]
        try:
            record_queries.record_query_create(
                run=run, by=request.user, upload=Upload(name=record.name, data=record.read())
            )
        except NotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        except SubmissionError as exc:
            form.add_error("record", str(exc))
        else:
            messages.success(request, "Asked: the answer appears here when it is ready.")
            return redirect(f"{submission.get_absolute_url()}#record-queries")
    context = _detail_context(request, submission)
    context["record_queries"] = _record_query_section(request.user, run, form)
    return render(request, "submissions/detail.html", context, status=400)


def _record_query(submission: Submission, query_id: int) -> RecordQuery:
    query = RecordQuery.objects.filter(id=query_id, run__submission=submission).first()
    if query is None:
        raise Http404("This request has no record query with that number.")
    return query


@login_required
def record_query_status(request, submission_id: int, query_id: int):
    """A query's status, polled by the request page while it is queued or running."""
    query = _record_query(_visible(request, submission_id), query_id)
    return JsonResponse({"status": query.status, "status_label": query.get_status_display()})


@login_required
@require_POST
def record_query_values(request, submission_id: int, query_id: int):
    """A checker who ticked "show values" sees the queried record's values (logged)."""
    submission = _visible(request, submission_id)
    query = _record_query(submission, query_id)
    if request.POST.get("show_values") != "1":
        messages.error(request, 'Tick "show values" to see the record\'s values.')
        return redirect(f"{submission.get_absolute_url()}#record-query-{query.id}")
    try:
        values = record_queries.record_query_values(query=query, by=request.user)
    except NotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    response = render(
        request,
        "submissions/record_query_values.html",
        {"submission": submission, "query": query, "values": values},
    )
    response["Cache-Control"] = "no-store"
    return response
