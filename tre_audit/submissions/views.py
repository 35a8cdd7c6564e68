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
from attacks.report import report_dumps
from tre_audit.reviews import selectors as review_selectors
from tre_audit.reviews import services as review_services
from tre_audit.reviews.enums import Role
from tre_audit.reviews.forms import CommentForm, ReviewForm
from tre_audit.serving import selectors as serving_selectors
from tre_audit.serving import services as serving_services
from tre_audit.submissions import selectors, services
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.exceptions import NotAllowed, SubmissionError
from tre_audit.submissions.forms import NewVersionForm, ReasonForm, SubmissionForm
from tre_audit.submissions.models import AuditRun, Submission


def _visible(request, submission_id: int) -> Submission:
    try:
        return selectors.submission_get_visible(user=request.user, submission_id=submission_id)
    except NotAllowed:
        raise Http404("There is no request with that number you can see.") from None


def _uploads(files) -> dict[str, Upload]:
    return {role: Upload(name=files[role].name, data=files[role].read()) for role in files}


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
    rows = selectors.submission_rows(user=request.user)
    return render(request, "submissions/list.html", {"rows": rows})


@login_required
def submission_create(request):
    if Role.RESEARCHER not in selectors.user_roles(request.user):
        raise PermissionDenied("Only researchers submit models.")
    form = SubmissionForm(request.POST or None, request.FILES or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            submission = services.submission_create(
                author=request.user,
                title=data["title"],
                label=data["label"],
                project=data["project"],
                declaration=services.Declaration(
                    **{k: data[k] for k in services.Declaration.__dataclass_fields__}
                ),
                **_uploads({r: data[r] for r in ("model", "train", "test")}),
            )
        except SubmissionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Submitted: the audit has been queued.")
            return redirect(submission)
    status = 400 if request.method == "POST" else 200
    return render(request, "submissions/create.html", {"form": form}, status=status)


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
        "reviews": [
            {"review": r, "evidence": [titles.get(e, e) for e in r.evidence]}
            for r in review_selectors.review_list_visible_to(user=user, submission=submission)
        ],
        "run_progress": selectors.run_progress(run=latest, now=timezone.now()),
        "comments": review_selectors.comment_list_visible_to(user=user, submission=submission),
        "versions": selectors.version_compare(submission=submission),
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
        "new_version_form": NewVersionForm(),
        "withdraw_form": ReasonForm(),
        "review_form": ReviewForm(findings=titles),
        "comment_form": CommentForm(findings=titles),
        "titles": titles,
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
    response = HttpResponse(report_dumps(run.report), content_type="application/json")
    response["Content-Disposition"] = (
        f'attachment; filename="request-{submission.pk}-v{run.version}-report.json"'
    )
    return response


@login_required
def submission_compare(request, submission_id: int):
    submission = _visible(request, submission_id)
    rows = selectors.version_compare(submission=submission)
    attacks = sorted({name for row in rows for name in row["auc"]})
    for row in rows:
        row["auc_list"] = [row["auc"].get(name) for name in attacks]
    return render(
        request,
        "submissions/compare.html",
        {"submission": submission, "rows": rows, "attacks": attacks},
    )


@login_required
@require_POST
def submission_new_version(request, submission_id: int):
    submission = _visible(request, submission_id)
    form = NewVersionForm(request.POST, request.FILES)
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.submission_new_version(
                submission=submission,
                by=request.user,
                note=data["note"],
                **_uploads({r: data[r] for r in ("model", "train", "test")}),
            )
        except NotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        except SubmissionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "New version stored: the audit has been queued again.")
            return redirect(submission)
    context = _detail_context(request, submission) | {"new_version_form": form}
    return render(request, "submissions/detail.html", context, status=400)


@login_required
@require_POST
def submission_withdraw(request, submission_id: int):
    submission = _visible(request, submission_id)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why you withdraw the request.")
        return redirect(submission)
    try:
        services.submission_withdraw(
            submission=submission, by=request.user, reason=form.cleaned_data["reason"]
        )
    except NotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except SubmissionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "The request was withdrawn.")
    return redirect(submission)


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
