"""A sign-out (web or API) or a new password ends every API token of the user."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import pre_save
from django.dispatch import receiver

from tre_audit.api.services import tokens_revoke


@receiver(user_logged_out)
def _revoke_on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        tokens_revoke(user=user)


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def _revoke_on_password_change(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    if raw or instance.pk is None or "password" not in (update_fields or {"password"}):
        return
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    if stored is not None and stored != instance.password:
        tokens_revoke(user=instance)
