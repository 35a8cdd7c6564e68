"""Which endpoints a user may see."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from tre_audit.reviews.enums import Role
from tre_audit.reviews.services import user_has_role
from tre_audit.serving.enums import EndpointStatus
from tre_audit.serving.exceptions import ServingNotAllowed
from tre_audit.serving.models import Endpoint


def endpoint_list_visible_to(*, user: AbstractBaseUser) -> QuerySet[Endpoint]:
    """Admins see every endpoint; others those of their requests or that name them."""
    qs = Endpoint.objects.select_related("submission", "created_by")
    if user_has_role(user, Role.TRE_ADMIN):
        return qs
    return qs.filter(Q(submission__author=user) | Q(callers=user)).distinct()


def endpoint_get_visible(*, user: AbstractBaseUser, endpoint_id: int) -> Endpoint:
    endpoint = endpoint_list_visible_to(user=user).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise ServingNotAllowed("There is no endpoint with that number you can use.")
    return endpoint


def endpoint_list_running() -> list[Endpoint]:
    """Running endpoints with their ``caller_names`` (admins grant them), for the dashboard."""
    endpoints = list(
        Endpoint.objects.filter(status=EndpointStatus.RUNNING)
        .select_related("submission", "created_by")
        .prefetch_related("callers")
        .order_by("created_at")
    )
    for endpoint in endpoints:
        endpoint.caller_names = sorted(c.get_username() for c in endpoint.callers.all())
    return endpoints
