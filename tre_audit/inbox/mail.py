"""The e-mail log: Django's console backend, appended to a file a TRE admin can read."""

from __future__ import annotations

import fcntl
from pathlib import Path

from django.conf import settings
from django.core.mail.backends.console import EmailBackend as ConsoleEmailBackend

#: Between two messages in the log, as the console backend writes them.
SEPARATOR = "-" * 79


class MailLogBackend(ConsoleEmailBackend):
    """Each message as the console backend prints it, appended to ``TRE_AUDIT_MAIL_LOG``.

    The web app and the workers all append to the one file: each message is written
    in one call under an exclusive lock, so two processes never interleave.
    """

    def __init__(self, *args, path: str | Path | None = None, **kwargs):
        super().__init__(*args, stream=None, **kwargs)
        self.path = Path(path or settings.TRE_AUDIT_MAIL_LOG)

    def open(self) -> bool:
        if self.stream is not None:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = self.path.open("a", encoding="utf-8")
        return True

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def write_message(self, message) -> None:
        msg = message.message()
        charset = msg.get_charset().get_output_charset() if msg.get_charset() else "utf-8"
        text = f"{msg.as_bytes().decode(charset)}\n{SEPARATOR}\n"
        fcntl.flock(self.stream, fcntl.LOCK_EX)
        try:
            self.stream.write(text)
            self.stream.flush()
        finally:
            fcntl.flock(self.stream, fcntl.LOCK_UN)


def mail_destination() -> str:
    """Where e-mail goes, in one sentence for the run command's summary."""
    backend = settings.EMAIL_BACKEND
    if backend.endswith("smtp.EmailBackend"):
        return f"E-mail is sent through {settings.EMAIL_HOST}:{settings.EMAIL_PORT}."
    if backend == f"{__name__}.MailLogBackend":
        path, root = Path(settings.TRE_AUDIT_MAIL_LOG), Path(settings.BASE_DIR)
        return (
            f"E-mail is written to {path.relative_to(root) if path.is_relative_to(root) else path}."
        )
    return f"E-mail goes to {backend.rsplit('.', 2)[-2]} ({backend})."


def absolute_url(path: str) -> str:
    """``path`` on this service as a link that works from an e-mail."""
    return settings.TRE_AUDIT_BASE_URL.rstrip("/") + path
