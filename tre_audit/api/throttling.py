"""Throttles: the token endpoint counts per address and username, strictly."""

from __future__ import annotations

import hashlib

from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle


class TokenRateThrottle(SimpleRateThrottle):
    """``token`` rate (settings) per client address and username tried."""

    scope = "token"

    def get_cache_key(self, request, view) -> str:
        username = str(request.data.get("username", "")) if hasattr(request.data, "get") else ""
        tried = hashlib.sha256(f"{self.get_ident(request)} {username}".encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": tried}


class RecordQueryRateThrottle(UserRateThrottle):
    """``record_query`` rate (settings) of questions per user: each trains shadow models.
    Reading answers is left to the ordinary user rate."""

    scope = "record_query"

    def allow_request(self, request, view) -> bool:
        return request.method in SAFE_METHODS or super().allow_request(request, view)


class PasswordResetRateThrottle(SimpleRateThrottle):
    """``password_reset`` rate (settings) of reset e-mails asked for per client address."""

    scope = "password_reset"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
