"""The inbox over the REST API: your notifications, newest first, and marking them read."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from tre_audit.api.serializers import ErrorSerializer
from tre_audit.inbox import selectors, services
from tre_audit.inbox.mail import absolute_url
from tre_audit.inbox.models import Notification
from tre_audit.inbox.views import PAGE_SIZE

TAG_INBOX = "inbox"
_401 = OpenApiResponse(ErrorSerializer, description="No or an invalid token.")


class NotificationSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="The page it is about.")

    class Meta:
        model = Notification
        fields = ["id", "kind", "subject", "body", "url", "created_at", "read_at"]

    def get_url(self, notification: Notification) -> str:
        return absolute_url(notification.url)


class MarkedSerializer(serializers.Serializer):
    marked = serializers.IntegerField(help_text="How many unread notifications were marked.")


class InboxPagination(PageNumberPagination):
    page_size = PAGE_SIZE


class InboxListView(ListAPIView):
    serializer_class = NotificationSerializer
    pagination_class = InboxPagination

    def get_queryset(self):
        return selectors.notification_list_for(user=self.request.user)

    @extend_schema(tags=[TAG_INBOX], responses={200: NotificationSerializer, 401: _401})
    def get(self, request, *args, **kwargs):
        """Your notifications, newest first, a page at a time (``?page=2``)."""
        return super().get(request, *args, **kwargs)


class InboxReadView(APIView):
    @extend_schema(
        tags=[TAG_INBOX],
        operation_id="inbox_read_all",
        request=None,
        responses={200: MarkedSerializer, 401: _401},
    )
    def post(self, request):
        """Mark all your notifications read."""
        n_marked = services.notifications_mark_all_read(user=request.user)
        return Response({"marked": n_marked})


class NotificationReadView(APIView):
    @extend_schema(
        tags=[TAG_INBOX],
        operation_id="inbox_notification_read",
        request=None,
        responses={
            200: NotificationSerializer,
            401: _401,
            404: OpenApiResponse(ErrorSerializer, description="You have no such notification."),
        },
    )
    def post(self, request, notification_id: int):
        """Mark one of your notifications read."""
        notification = get_object_or_404(Notification, pk=notification_id, user=request.user)
        notification = services.notification_open(notification=notification)
        return Response(NotificationSerializer(notification).data)
