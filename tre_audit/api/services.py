"""API tokens: knox stores only their hashes; these revoke them."""

from __future__ import annotations

from django.contrib.auth.models import User
from knox.models import get_token_model


def tokens_revoke(*, user: User) -> int:
    """Delete every API token of ``user``; returns how many there were."""
    deleted, _ = get_token_model().objects.filter(user=user).delete()
    return deleted
