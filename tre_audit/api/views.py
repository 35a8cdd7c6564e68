"""REST endpoints: parse, call one selector or service, serialize.

Domain errors become 4xx in ``tre_audit.api.exceptions``. A request the caller
cannot see is a 404 (its existence is not confirmed); one they can see but may
not act on is a 403.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from knox.views import LoginView as KnoxLoginView
from knox.views import LogoutView as KnoxLogoutView
from rest_framework import status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, AllowAny, BasePermission, IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from attacks.audit import Upload
from attacks.intake import MAX_RECORD_BYTES
from safe_model.refusal import size
from tre_audit.api import serializers as s
from tre_audit.api.throttling import RecordQueryRateThrottle, TokenRateThrottle
from tre_audit.reviews import selectors as review_selectors
from tre_audit.reviews import services as review_services
from tre_audit.reviews.enums import Role
from tre_audit.submissions import record_queries, selectors, services
from tre_audit.submissions.exceptions import NotAllowed, UploadRefused
from tre_audit.submissions.forms import SubmissionListForm
from tre_audit.submissions.models import AuditRun, RecordQuery, Submission

TAG_REQUESTS, TAG_REVIEWS, TAG_AUTH = "requests", "reviews", "auth"

#: Error responses every endpoint on one request may give.
_ERRORS = {
    401: OpenApiResponse(s.ErrorSerializer, description="No or an invalid token."),
    403: OpenApiResponse(s.ErrorSerializer, description="You may not do this."),
    404: OpenApiResponse(s.ErrorSerializer, description="No such request that you can see."),
}
_CHANGE_ERRORS = {
    **_ERRORS,
    400: OpenApiResponse(s.ErrorSerializer, description="Invalid input; nothing was changed."),
    409: OpenApiResponse(s.ErrorSerializer, description="Not possible in the request's status."),
}


class _BinaryRenderer(BaseRenderer):
    """Lets clients ask for the file's type; errors still come back as JSON."""

    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else json.dumps(data).encode()


class PdfRenderer(_BinaryRenderer):
    media_type, format = "application/pdf", "pdf"


class ZipRenderer(_BinaryRenderer):
    media_type, format = "application/zip", "zip"


class CanSubmit(BasePermission):
    message = "Only researchers can submit requests."

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or Role.RESEARCHER in selectors.user_roles(
            request.user
        )


class IsChecker(BasePermission):
    message = "Only output checkers have a review queue."

    def has_permission(self, request, view) -> bool:
        return Role.CHECKER in selectors.user_roles(request.user)


def _visible(request, submission_id: int) -> Submission:
    """The request if the caller may see it; NotAllowed (404) otherwise."""
    return selectors.submission_get_visible(user=request.user, submission_id=submission_id)


def _valid(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data, context={"request": request})
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@contextmanager
def _forbidden_if_not_allowed():
    """A service's NotAllowed on a request the caller can see is a 403, not a 404."""
    try:
        yield
    except NotAllowed as exc:
        raise PermissionDenied(str(exc)) from None


def _detail(request, submission: Submission, code: int = status.HTTP_200_OK) -> Response:
    data = s.SubmissionDetailSerializer(submission, context={"request": request}).data
    return Response(data, status=code)


def _report_run(submission: Submission) -> AuditRun:
    run = selectors.current_run(submission)
    if run is None or run.report is None:
        raise NotFound("This request has no finished audit of its current version yet.")
    return run


class TokenView(KnoxLoginView):
    """Exchange a username and password for a new API token that expires (scripts, the CLI).

    Only the token's hash is stored. Repeated failures are throttled and lock the
    username out for this address (429), as on the sign-in page.
    """

    authentication_classes = []  # credentials are in the body; no session, so no CSRF
    permission_classes = [AllowAny]
    throttle_classes = [TokenRateThrottle]

    @extend_schema(
        tags=[TAG_AUTH],
        request=AuthTokenSerializer,
        responses={200: s.TokenSerializer, 400: s.ErrorSerializer, 429: s.ErrorSerializer},
        auth=[],
    )
    def post(self, request, format=None):
        # Django's own request, so that a lockout is seen by Axes' middleware
        context = {"request": request._request}
        serializer = AuthTokenSerializer(data=request.data, context=context)
        serializer.is_valid(raise_exception=True)
        request.user = serializer.validated_data["user"]
        return super().post(request, format=format)


class TokenLogoutView(KnoxLogoutView):
    """Sign out: every API token of yours stops working (as after a web sign-out)."""

    @extend_schema(tags=[TAG_AUTH], request=None, responses={204: None, 401: _ERRORS[401]})
    def post(self, request, format=None):
        return super().post(request, format=format)


#: The request list's query parameters: the web list's filters, its sort and the page.
REQUEST_LIST_PARAMETERS = {
    "page": "Page number, from 1 (50 requests a page).",
    "q": "Words in the title, or the request number.",
    "status": "One status, e.g. awaiting_review.",
    "risk": "low, medium or high: the current audit's verdict.",
    "author": "The author's username.",
    "project": "The project's name.",
    "since": "Last activity on or after this date (YYYY-MM-DD).",
    "until": "Last activity on or before this date (YYYY-MM-DD).",
    "sort": "date, status, risk or title; a leading - sorts descending (default -date).",
}


class RequestPagination(PageNumberPagination):
    page_size = 50


class RequestListView(APIView):
    permission_classes = [IsAuthenticated, CanSubmit]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        tags=[TAG_REQUESTS],
        parameters=[
            OpenApiParameter(name, str, description=description)
            for name, description in REQUEST_LIST_PARAMETERS.items()
        ],
        responses={200: s.SubmissionRowSerializer(many=True), 401: _ERRORS[401]},
    )
    def get(self, request):
        """The requests you may see, newest activity first, a page at a time, filtered and
        sorted as the web's request list is (a filter it cannot read is left out)."""
        form = SubmissionListForm(request.query_params)
        rows = selectors.submission_rows(
            user=request.user, filters=form.filters(), sort=form.sort_value()
        )
        pages = RequestPagination()
        page = pages.paginate_queryset(rows, request, view=self)
        data = s.SubmissionRowSerializer(page, many=True, context={"request": request}).data
        return pages.get_paginated_response(data)

    @extend_schema(
        tags=[TAG_REQUESTS],
        request={"multipart/form-data": s.SubmissionCreateSerializer},
        responses={201: s.SubmissionDetailSerializer, **_CHANGE_ERRORS},
    )
    def post(self, request):
        """Submit a model and its data for an audit (researchers only).

        The files are checked on arrival; a refused file stores nothing.
        """
        data = _valid(s.SubmissionCreateSerializer, request)
        with _forbidden_if_not_allowed():
            submission = services.submission_create(
                author=request.user,
                title=data["title"],
                label=data["label"],
                project=data.get("project"),
                declaration=s.declaration_from(data),
                model=data["model"],
                architecture=data.get("declaration"),
                train=data["train"],
                test=data["test"],
            )
        return _detail(request, submission, status.HTTP_201_CREATED)


class RequestDetailView(APIView):
    @extend_schema(tags=[TAG_REQUESTS], responses={200: s.SubmissionDetailSerializer, **_ERRORS})
    def get(self, request, submission_id: int):
        """Status, audit progress, verdict, the reviews you may read, and links."""
        return _detail(request, _visible(request, submission_id))


class ReportJsonView(APIView):
    @extend_schema(
        tags=[TAG_REQUESTS],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "report.json"), **_ERRORS},
    )
    def get(self, request, submission_id: int):
        """The report of the current version's newest finished audit."""
        run = _report_run(_visible(request, submission_id))
        return HttpResponse(
            record_queries.report_with_record_queries(run), content_type="application/json"
        )


class ReportPdfView(APIView):
    renderer_classes = [JSONRenderer, PdfRenderer]

    @extend_schema(
        tags=[TAG_REQUESTS],
        responses={(200, "application/pdf"): OpenApiTypes.BINARY, **_ERRORS},
    )
    def get(self, request, submission_id: int):
        """The PDF report for output checkers, of the same audit as report.json."""
        submission = _visible(request, submission_id)
        run = _report_run(submission)
        response = HttpResponse(
            services.file_read(stored=run.report_pdf), content_type="application/pdf"
        )
        response["Content-Disposition"] = (
            f'inline; filename="request-{submission.pk}-v{run.version}-report.pdf"'
        )
        return response


class NewVersionView(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        tags=[TAG_REQUESTS],
        request={"multipart/form-data": s.NewVersionSerializer},
        responses={201: s.SubmissionDetailSerializer, **_CHANGE_ERRORS},
    )
    def post(self, request, submission_id: int):
        """Send new files for your request; it is audited again and reviews start afresh."""
        submission = _visible(request, submission_id)
        data = _valid(s.NewVersionSerializer, request)
        with _forbidden_if_not_allowed():
            submission = services.submission_new_version(
                submission=submission,
                by=request.user,
                model=data["model"],
                architecture=data.get("declaration"),
                train=data["train"],
                test=data["test"],
                note=data["note"],
                declared={k: data[k] for k in services.NEW_VERSION_DECLARED if k in data},
            )
        return _detail(request, submission, status.HTTP_201_CREATED)


class WithdrawView(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        tags=[TAG_REQUESTS],
        request=s.ReasonSerializer,
        responses={200: s.SubmissionDetailSerializer, **_CHANGE_ERRORS},
    )
    def post(self, request, submission_id: int):
        """Take your request back, saying why; nothing is deleted."""
        submission = _visible(request, submission_id)
        data = _valid(s.ReasonSerializer, request)
        with _forbidden_if_not_allowed():
            submission = services.submission_withdraw(
                submission=submission, by=request.user, reason=data["reason"]
            )
        return _detail(request, submission)


class RetryView(APIView):
    @extend_schema(
        tags=[TAG_REQUESTS],
        request=None,
        responses={202: s.SubmissionDetailSerializer, **_CHANGE_ERRORS},
    )
    def post(self, request, submission_id: int):
        """Audit a request whose audit failed again (its author or a TRE admin)."""
        submission = _visible(request, submission_id)
        with _forbidden_if_not_allowed():
            services.audit_run_retry(submission=submission, by=request.user)
        submission.refresh_from_db()
        return _detail(request, submission, status.HTTP_202_ACCEPTED)


def _record_upload(request) -> Upload:
    """The record a client sent: a JSON body as it is, else the multipart file ``record``."""
    if request.content_type.startswith("application/json"):
        if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_RECORD_BYTES:
            raise UploadRefused(f"The record is larger than the limit of {size(MAX_RECORD_BYTES)}.")
        return Upload(name="record.json", data=request.body)
    return _valid(s.RecordQueryCreateSerializer, request)["record"]


def _record_queries(request, submission_id: int, views: list[dict]) -> list[dict]:
    context = {"request": request, "submission_id": submission_id}
    return s.RecordQuerySerializer(views, many=True, context=context).data


class RecordQueryListView(APIView):
    parser_classes = [MultiPartParser, JSONParser]
    throttle_classes = [UserRateThrottle, RecordQueryRateThrottle]

    @extend_schema(
        tags=[TAG_REQUESTS], responses={200: s.RecordQuerySerializer(many=True), **_ERRORS}
    )
    def get(self, request, submission_id: int):
        """The record questions asked of the current version's newest finished audit."""
        run = _report_run(_visible(request, submission_id))
        return Response(
            _record_queries(request, submission_id, record_queries.record_query_rows(run=run))
        )

    @extend_schema(
        tags=[TAG_REQUESTS],
        request={
            "multipart/form-data": s.RecordQueryCreateSerializer,
            "application/json": OpenApiTypes.OBJECT,
        },
        responses={201: s.RecordQuerySerializer, 429: s.ErrorSerializer, **_CHANGE_ERRORS},
    )
    def post(self, request, submission_id: int):
        """Ask whether one record was in the training set (the author, checkers, TRE admins).

        It is checked against the audit at once (400 with one sentence; nothing is
        stored) and answered by a worker: poll the returned ``url`` for the answer.
        """
        run = _report_run(_visible(request, submission_id))
        upload = _record_upload(request)
        with _forbidden_if_not_allowed():
            query = record_queries.record_query_create(run=run, by=request.user, upload=upload)
        [data] = _record_queries(request, submission_id, [record_queries.record_query_view(query)])
        return Response(data, status=status.HTTP_201_CREATED)


class RecordQueryDetailView(APIView):
    @extend_schema(tags=[TAG_REQUESTS], responses={200: s.RecordQuerySerializer, **_ERRORS})
    def get(self, request, submission_id: int, query_id: int):
        """One record question: queued, running, failed (with why) or its answer."""
        submission = _visible(request, submission_id)
        query = RecordQuery.objects.filter(id=query_id, run__submission=submission).first()
        if query is None:
            raise NotFound("This request has no record question with that number.")
        [data] = _record_queries(request, submission_id, [record_queries.record_query_view(query)])
        return Response(data)


class QueueView(APIView):
    permission_classes = [IsAuthenticated, IsChecker]

    @extend_schema(
        tags=[TAG_REVIEWS],
        responses={200: s.QueueRowSerializer(many=True), 401: _ERRORS[401], 403: _ERRORS[403]},
    )
    def get(self, request):
        """Requests awaiting a review you may give, oldest first (checkers only)."""
        rows = review_selectors.review_queue_for(user=request.user)
        return Response(s.QueueRowSerializer(rows, many=True, context={"request": request}).data)


class ReviewCreateView(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        tags=[TAG_REVIEWS],
        request=s.ReviewCreateSerializer,
        responses={201: s.ReviewSerializer, **_CHANGE_ERRORS},
    )
    def post(self, request, submission_id: int):
        """Record your decision on the current audit, citing the findings it relies on."""
        submission = _visible(request, submission_id)
        data = _valid(s.ReviewCreateSerializer, request)
        review = review_services.review_submit(submission=submission, reviewer=request.user, **data)
        return Response(s.ReviewSerializer(review).data, status=status.HTTP_201_CREATED)


class SignOffView(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        tags=[TAG_REVIEWS],
        request=s.ReasonSerializer,
        responses={200: s.ReviewSerializer, **_CHANGE_ERRORS},
    )
    def post(self, request, submission_id: int, review_id: int):
        """Countersign an approval given against a high-risk verdict (TRE admins)."""
        submission = _visible(request, submission_id)
        review = submission.reviews.filter(pk=review_id).first()
        if review is None:
            raise NotFound("This request has no review with that number.")
        data = _valid(s.ReasonSerializer, request)
        review = review_services.review_sign_off(
            review=review, admin=request.user, reason=data["reason"]
        )
        return Response(s.ReviewSerializer(review).data)


class ReleaseView(APIView):
    @extend_schema(
        tags=[TAG_REVIEWS],
        request=None,
        responses={200: s.SubmissionDetailSerializer, **_CHANGE_ERRORS},
    )
    def post(self, request, submission_id: int):
        """Release an approved request: its bundle is built (author or TRE admin)."""
        submission = _visible(request, submission_id)
        submission = review_services.submission_release(submission=submission, by=request.user)
        return _detail(request, submission)


class BundleView(APIView):
    renderer_classes = [JSONRenderer, ZipRenderer]

    @extend_schema(
        tags=[TAG_REVIEWS],
        responses={(200, "application/zip"): OpenApiTypes.BINARY, **_ERRORS},
    )
    def get(self, request, submission_id: int):
        """The release bundle: model (unless withheld), reports and a manifest of hashes."""
        submission = _visible(request, submission_id)
        if not selectors.user_is_author_or_admin(request.user, submission):
            raise PermissionDenied("Only the author or a TRE admin can download the release.")
        if submission.release_bundle is None:
            raise NotFound("This request has not been released.")
        response = HttpResponse(
            services.file_read(stored=submission.release_bundle), content_type="application/zip"
        )
        response["Content-Disposition"] = (
            f'attachment; filename="request-{submission.pk}-v{submission.version}-release.zip"'
        )
        return response
