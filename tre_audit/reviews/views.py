"""Output checkers' pages: the queue, the decision, comments; the release."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from tre_audit.listing import listing_page
from tre_audit.reviews import selectors, services
from tre_audit.reviews.enums import Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.forms import CommentForm, QueueForm, ReleaseForm, ReviewForm
from tre_audit.submissions.exceptions import SubmissionError
from tre_audit.submissions.selectors import finding_titles
from tre_audit.submissions.views import _detail_context, _visible


@login_required
def review_queue(request):
    if not services.user_has_role(request.user, Role.CHECKER):
        raise PermissionDenied("Only output checkers have a review queue.")
    form = QueueForm(request.GET)
    rows = selectors.review_queue_rows(
        user=request.user, filters=form.filters(), sort=form.sort_value()
    )
    listing = listing_page(form=form, rows=rows, page=request.GET.get("page"))
    return render(request, "reviews/queue.html", {"listing": listing})


@login_required
@require_POST
def claim_view(request, submission_id: int):
    submission = _visible(request, submission_id)
    try:
        if request.POST.get("action") == "release":
            services.submission_unclaim(submission=submission, by=request.user)
            messages.success(request, f"You released request #{submission.pk}.")
        else:
            services.submission_claim(submission=submission, by=request.user)
            messages.success(request, f"Request #{submission.pk} is marked as yours.")
    except ReviewNotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except (ReviewInvalid, SubmissionError) as exc:  # claimed by another; a broken log
        messages.error(request, str(exc))
    return redirect(_back_to_queue(request))


def _back_to_queue(request) -> str:
    """The queue page the form was on (its filters kept), never another site."""
    back = request.POST.get("next", "")
    if back.startswith(reverse("reviews:queue")) and url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}
    ):
        return back
    return reverse("reviews:queue")


@login_required
@require_POST
def review_submit_view(request, submission_id: int):
    submission = _visible(request, submission_id)
    run = services.current_run(submission)
    form = ReviewForm(request.POST, findings=finding_titles(run.report if run else None))
    if form.is_valid():
        try:
            services.review_submit(
                submission=submission, reviewer=request.user, **form.cleaned_data
            )
        except ReviewNotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        except (ReviewInvalid, SubmissionError) as exc:  # e.g. a stale page, a broken log
            form.add_error(_field_of(exc, form), str(exc))
        else:
            messages.success(request, "Your review was recorded.", extra_tags="reviews")
            return redirect(f"{submission.get_absolute_url()}#reviews")
    context = _detail_context(request, submission) | {"review_form": form}
    return render(request, "submissions/detail.html", context, status=400)


def _field_of(exc: Exception, form) -> str | None:
    """The field a refusal is about, said at that field; None for the form as a whole."""
    field = getattr(exc, "field", None)
    return field if field in form.fields else None


@login_required
@require_POST
def comment_add_view(request, submission_id: int):
    submission = _visible(request, submission_id)
    run = services.current_run(submission)
    form = CommentForm(request.POST, findings=finding_titles(run.report if run else None))
    if form.is_valid():
        try:
            services.comment_add(submission=submission, author=request.user, **form.cleaned_data)
        except ReviewNotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        except (ReviewInvalid, SubmissionError) as exc:
            form.add_error(_field_of(exc, form), str(exc))
        else:
            messages.success(request, "Your comment was added.", extra_tags="comments")
            return redirect(f"{submission.get_absolute_url()}#comments")
    context = _detail_context(request, submission) | {"comment_form": form}
    return render(request, "submissions/detail.html", context, status=400)


@login_required
@require_POST
def release_view(request, submission_id: int):
    submission = _visible(request, submission_id)
    form = ReleaseForm(request.POST)
    try:
        if not form.is_valid():  # not confirmed: said at the box, unless not theirs to release
            services.check_user_can_release(request.user, submission)
            context = _detail_context(request, submission) | {"release_form": form}
            return render(request, "submissions/detail.html", context, status=400)
        services.submission_release(submission=submission, by=request.user)
    except ReviewNotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except SubmissionError as exc:  # the audit log is broken: nothing was released
        messages.error(request, str(exc))
        return redirect(submission)
    messages.success(request, "Released: the release bundle is ready to download.")
    return redirect(submission)
