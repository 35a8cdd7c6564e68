"""The e-mail log the run command names, and SMTP set up from the environment."""

import json
import os
import subprocess
import sys
from email import message_from_string
from pathlib import Path

from django.core.mail import EmailMessage

from tre_audit.inbox.mail import SEPARATOR, MailLogBackend, mail_destination

ROOT = Path(__file__).resolve().parents[3]


def test_messages_are_appended_to_the_log_one_after_another(tmp_path):
    log = tmp_path / "log" / "mail.log"
    for n in (1, 2):
        MailLogBackend(path=log).send_messages(
            [EmailMessage(f"Request #{n}: approved", "Fine ✓", "tre@x", ["ann@x"])]
        )
    messages = [m for m in log.read_text(encoding="utf-8").split(f"\n{SEPARATOR}\n") if m]
    parsed = [message_from_string(m) for m in messages]
    assert [m["Subject"] for m in parsed] == ["Request #1: approved", "Request #2: approved"]
    assert parsed[0]["To"] == "ann@x" and "Fine ✓" in messages[0]


def test_the_run_command_says_where_mail_goes(settings, tmp_path):
    settings.EMAIL_BACKEND = "tre_audit.inbox.mail.MailLogBackend"
    settings.TRE_AUDIT_MAIL_LOG = settings.BASE_DIR / "var" / "log" / "mail.log"
    assert mail_destination() == "E-mail is written to var/log/mail.log."
    settings.TRE_AUDIT_MAIL_LOG = tmp_path / "mail.log"
    assert mail_destination() == f"E-mail is written to {tmp_path / 'mail.log'}."


PROBE = """
import json
from django.conf import settings
from tre_audit.inbox.mail import mail_destination
print(json.dumps([settings.EMAIL_BACKEND, settings.EMAIL_HOST_USER, settings.EMAIL_USE_TLS,
                  settings.EMAIL_TIMEOUT, mail_destination()]))
"""


def _settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRE_AUDIT_EMAIL")}
    clean.update(PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="tre_audit.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_smtp_is_set_from_the_environment():
    done = _settings(
        TRE_AUDIT_EMAIL_BACKEND="smtp",
        TRE_AUDIT_EMAIL_HOST="mail.tre.example",
        TRE_AUDIT_EMAIL_USER="tre-audit",
    )
    assert json.loads(done.stdout) == [
        "django.core.mail.backends.smtp.EmailBackend",
        "tre-audit",
        True,
        10,
        "E-mail is sent through mail.tre.example:587.",
    ]


def test_smtp_without_a_host_fails_with_a_hint():
    done = _settings(TRE_AUDIT_EMAIL_BACKEND="smtp")
    assert done.returncode != 0
    assert "Set the environment variable TRE_AUDIT_EMAIL_HOST." in done.stderr
    assert "SMTP needs the mail server's host name." in done.stderr
