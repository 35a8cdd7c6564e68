"""Read settings from the environment, failing with a hint instead of a KeyError."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

_MISSING = object()


def env(name: str, default=_MISSING, *, hint: str = "") -> str:
    """The variable ``name``, or ``default``; without a default, a clear error."""
    value = os.environ.get(name)
    if value not in (None, ""):
        return value
    if default is _MISSING:
        raise ImproperlyConfigured(f"Set the environment variable {name}. {hint}".strip())
    return default


def env_bool(name: str, default: bool) -> bool:
    value = env(name, "")
    if value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}.")


def env_int(name: str, default: int) -> int:
    value = env(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None
