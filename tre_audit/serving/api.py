"""REST endpoints of secure serving: deploy and stop, HE inference, the enclave, MPC.

Binary bodies are read straight from the stream after their declared length is
checked, so an oversized body is refused with 413 before a byte is buffered.
Calls are logged by the services (caller, size, rows), never their content, and
counted against the caller's daily query budget: once spent, 429 with
``Retry-After`` (seconds to midnight UTC). Only TRE admins name callers.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from secure_compute import he, mpc
from secure_compute.exceptions import EnclaveUnavailable, MPCUnavailable, SecureComputeError
from secure_compute.sealing import MAX_SEALED_REQUEST_BYTES
from tre_audit.api.serializers import ErrorSerializer
from tre_audit.serving import selectors, services
from tre_audit.serving.enums import EndpointKind
from tre_audit.serving.exceptions import BudgetSpent
from tre_audit.serving.models import Endpoint
from tre_audit.submissions.selectors import current_run, submission_get_visible

TAG = "secure serving"
MAX_NONCE_HEX = 1024

_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="No or an invalid token."),
    404: OpenApiResponse(ErrorSerializer, description="No such endpoint that you can use."),
}
_CALL_ERRORS = {
    **_ERRORS,
    400: OpenApiResponse(ErrorSerializer, description="Refused: the sentence says why."),
    413: OpenApiResponse(ErrorSerializer, description="The body is larger than allowed."),
    429: OpenApiResponse(ErrorSerializer, description="Today's query budget is spent."),
    503: OpenApiResponse(ErrorSerializer, description="The enclave or an MPC host is down."),
}


class EndpointSerializer(serializers.ModelSerializer):
    request = serializers.IntegerField(source="submission_id", read_only=True)
    urls = serializers.SerializerMethodField()
    feature_names = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "request",
            "kind",
            "status",
            "failure_reason",
            "model_sha256",
            "preset",
            "n_calls",
            "n_bytes_in",
            "created_at",
            "stopped_at",
            "feature_names",
            "urls",
        ]

    def get_feature_names(self, endpoint) -> list[str]:
        """The model's columns, in order, as the approved audit recorded them."""
        run = current_run(endpoint.submission)
        return list(((run.report or {}).get("data") or {}).get("features", [])) if run else []

    def get_urls(self, endpoint) -> dict[str, str]:
        base = self.context["request"].build_absolute_uri(f"/api/v1/endpoints/{endpoint.pk}/")
        if endpoint.kind == EndpointKind.HE:
            return {"model_info": f"{base}he/info", "evaluate": f"{base}he/evaluate"}
        if endpoint.kind == EndpointKind.MPC:
            return {"model_info": f"{base}mpc/info", "sessions": f"{base}mpc/sessions"}
        return {"endpoint": base.rstrip("/")}


class DeploySerializer(serializers.Serializer):
    request = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=EndpointKind.choices)
    callers = serializers.ListField(
        child=serializers.CharField(), required=False, default=list, help_text="TRE admins only"
    )
    reason = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="why callers may call"
    )
    preset = serializers.ChoiceField(choices=sorted(he.PRESETS), default=he.DEFAULT_PRESET)


class CallerSerializer(serializers.Serializer):
    username = serializers.CharField()
    reason = serializers.CharField()
    revoke = serializers.BooleanField(default=False)


def _users(usernames: list[str]) -> list | Response:
    """The users named, or a 400 if any is not a user of this service."""
    users = list(get_user_model().objects.filter(username__in=usernames))
    if len(users) != len(set(usernames)):
        return Response({"detail": "Some callers are not users of this service."}, status=400)
    return users


def _answer(call, content_type: str) -> HttpResponse | Response:
    """Run one secure-compute call; its one-sentence refusals become 400 (503: a host down).

    A spent query budget is 429 with ``Retry-After``.
    """
    return _guarded(call, lambda body: HttpResponse(body, content_type=content_type))


def _json_answer(call, code: int = status.HTTP_200_OK) -> Response:
    """:func:`_answer` for a call whose answer is JSON."""
    return _guarded(call, lambda body: Response(body, status=code))


def _guarded(call, respond) -> HttpResponse | Response:
    try:
        body = call()
    except (BudgetSpent, SecureComputeError) as exc:
        return _refusal(exc)
    response = respond(body)
    response["Cache-Control"] = "no-store"
    return response


def _refusal(exc: Exception) -> Response:
    if isinstance(exc, BudgetSpent):
        response = Response({"detail": str(exc)}, status=status.HTTP_429_TOO_MANY_REQUESTS)
        response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, (EnclaveUnavailable, MPCUnavailable)):
        return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)


def _body(request, limit: int) -> bytes | Response:
    """The raw body if its declared length is within ``limit``; else a 411/413 response."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length < 0:
        return Response({"detail": "Send the body with a Content-Length."}, status=411)
    if length > limit:
        return Response({"detail": f"The body is larger than {limit} bytes."}, status=413)
    return request._request.read(length)


def _endpoint(request, endpoint_id: int) -> Endpoint:
    return selectors.endpoint_get_visible(user=request.user, endpoint_id=endpoint_id)


class EndpointListView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(tags=[TAG], responses={200: EndpointSerializer(many=True), **_ERRORS})
    def get(self, request):
        endpoints = selectors.endpoint_list_visible_to(user=request.user)
        return Response(EndpointSerializer(endpoints, many=True, context={"request": request}).data)

    @extend_schema(
        tags=[TAG], request=DeploySerializer, responses={201: EndpointSerializer, **_CALL_ERRORS}
    )
    def post(self, request):
        data = DeploySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        submission = submission_get_visible(
            user=request.user, submission_id=data.validated_data["request"]
        )
        callers = _users(data.validated_data["callers"])
        if isinstance(callers, Response):
            return callers
        endpoint = services.endpoint_deploy(
            submission=submission,
            kind=data.validated_data["kind"],
            by=request.user,
            callers=callers,
            reason=data.validated_data["reason"],
            preset=data.validated_data["preset"],
        )
        body = EndpointSerializer(endpoint, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED)


class EndpointDetailView(APIView):
    @extend_schema(tags=[TAG], responses={200: EndpointSerializer, **_ERRORS})
    def get(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        return Response(EndpointSerializer(endpoint, context={"request": request}).data)


class EndpointStopView(APIView):
    @extend_schema(tags=[TAG], request=None, responses={200: EndpointSerializer, **_CALL_ERRORS})
    def post(self, request, endpoint_id: int):
        endpoint = services.endpoint_stop(endpoint=_endpoint(request, endpoint_id), by=request.user)
        return Response(EndpointSerializer(endpoint, context={"request": request}).data)


class EndpointCallersView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        tags=[TAG],
        request=CallerSerializer,
        responses={200: EndpointSerializer, 403: ErrorSerializer, **_CALL_ERRORS},
        description="A TRE admin grants (or revokes) a partner's right to call; logged.",
    )
    def post(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        data = CallerSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        callers = _users([data.validated_data["username"]])
        if isinstance(callers, Response):
            return callers
        change = (
            services.endpoint_caller_revoke
            if data.validated_data["revoke"]
            else services.endpoint_caller_grant
        )
        change(
            endpoint=endpoint,
            caller=callers[0],
            by=request.user,
            reason=data.validated_data["reason"],
        )
        return Response(EndpointSerializer(endpoint, context={"request": request}).data)


class HEModelInfoView(APIView):
    @extend_schema(tags=[TAG], responses={200: OpenApiTypes.OBJECT, **_CALL_ERRORS})
    def get(self, request, endpoint_id: int):
        return Response(
            services.he_model_info(endpoint=_endpoint(request, endpoint_id), user=request.user)
        )


class HEEvaluateView(APIView):
    parser_classes = []

    @extend_schema(
        tags=[TAG],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **_CALL_ERRORS},
    )
    def post(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        body = _body(request, he.MAX_BODY_BYTES)
        if isinstance(body, Response):
            return body
        return _answer(
            lambda: services.he_evaluate(endpoint=endpoint, user=request.user, body=body),
            "application/octet-stream",
        )


class AttestationView(APIView):
    @extend_schema(
        tags=[TAG],
        parameters=[OpenApiParameter("nonce", str, description="16 to 512 random bytes, hex")],
        responses={(200, "application/cbor"): OpenApiTypes.BINARY, **_CALL_ERRORS},
    )
    def get(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        nonce_hex = request.query_params.get("nonce", "")
        try:
            nonce = bytes.fromhex(nonce_hex) if len(nonce_hex) <= MAX_NONCE_HEX else b""
        except ValueError:
            nonce = b""
        if not 16 <= len(nonce) <= 512:
            return Response(
                {"detail": "Send a fresh nonce of 16 to 512 bytes, in hex."}, status=400
            )
        return _answer(
            lambda: services.enclave_attest(endpoint=endpoint, user=request.user, nonce=nonce),
            "application/cbor",
        )


class EnclaveRunView(APIView):
    parser_classes = []

    @extend_schema(
        tags=[TAG],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **_CALL_ERRORS},
    )
    def post(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        body = _body(request, MAX_SEALED_REQUEST_BYTES)
        if isinstance(body, Response):
            return body
        return _answer(
            lambda: services.enclave_run(endpoint=endpoint, user=request.user, sealed=body),
            "application/octet-stream",
        )


class MPCSessionOpenSerializer(serializers.Serializer):
    n_rows = serializers.IntegerField(min_value=1, max_value=mpc.MAX_ROWS)
    csr = serializers.CharField(max_length=16384, help_text="your key's certificate request, PEM")


class MPCModelInfoView(APIView):
    @extend_schema(
        tags=[TAG],
        responses={200: OpenApiTypes.OBJECT, **_CALL_ERRORS},
        description="The public layers, their SHA-256, the precision and row limit; no weights.",
    )
    def get(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        return _json_answer(lambda: services.mpc_model_info(endpoint=endpoint, user=request.user))


class MPCSessionOpenView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        tags=[TAG],
        request=MPCSessionOpenSerializer,
        responses={201: OpenApiTypes.OBJECT, **_CALL_ERRORS},
        description="Reserve rows and certify your key for one session with the two hosts.",
    )
    def post(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        data = MPCSessionOpenSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _json_answer(
            lambda: services.mpc_session_open(
                endpoint=endpoint,
                user=request.user,
                n_rows=data.validated_data["n_rows"],
                csr_pem=data.validated_data["csr"].encode(),
            ),
            status.HTTP_201_CREATED,
        )


class MPCSessionCloseView(APIView):
    @extend_schema(
        tags=[TAG],
        request=None,
        responses={200: OpenApiTypes.OBJECT, **_CALL_ERRORS},
        description="Settle a session: counted once if it ran, its rows refunded if not.",
    )
    def post(self, request, endpoint_id: int, session: str):
        endpoint = _endpoint(request, endpoint_id)
        return _json_answer(
            lambda: services.mpc_session_close(
                endpoint=endpoint, user=request.user, session=session
            )
        )
