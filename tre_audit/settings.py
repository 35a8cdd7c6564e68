"""The one settings module of the tre-audit service.

Embedded default: SQLite and files under ``var/`` beside the checkout, Redis on
localhost. Production: set ``TRE_AUDIT_SECRET_KEY``, ``DATABASE_URL``
(PostgreSQL), ``CELERY_BROKER_URL`` and ``TRE_AUDIT_DEBUG=false``.
"""

import os
from pathlib import Path

import dj_database_url

from tre_audit.env import env, env_bool, env_int

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("TRE_AUDIT_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("TRE_AUDIT_DEBUG", True)
if DEBUG:
    SECRET_KEY = env("TRE_AUDIT_SECRET_KEY", "dev-only-insecure-key")
else:
    SECRET_KEY = env("TRE_AUDIT_SECRET_KEY", hint="Production needs its own secret key.")
ALLOWED_HOSTS = env("TRE_AUDIT_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the docs' JavaScript served locally: a TRE has no CDN
    "tre_audit.submissions",
    "tre_audit.reviews",
    "tre_audit.dashboard",
    "tre_audit.serving",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tre_audit.urls"
WSGI_APPLICATION = "tre_audit.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tre_audit.context_processors.roles",
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # the embedded default needs no setup step
    # Web and worker processes write at once: WAL lets readers go on during a write,
    # IMMEDIATE takes the write lock at BEGIN (no deadlock on upgrade), and a writer
    # waits up to 30 s for the lock instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # a file, not memory, so that a test's Celery worker process sees the same data
    # (one per test process, so that test runs side by side do not share it)
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the source folders (one small stylesheet): no collectstatic step.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request otherwise

#: Submitted files, stored by SHA-256 and never changed once written.
TRE_AUDIT_FILE_ROOT = Path(env("TRE_AUDIT_FILE_ROOT", str(VAR_DIR / "files")))
#: The audit log's newest hashes, kept outside the database so a cut-off tail shows.
TRE_AUDIT_ANCHOR_FILE = Path(env("TRE_AUDIT_ANCHOR_FILE", str(VAR_DIR / "audit-anchor.log")))
#: The SIMULATED root that signs enclave attestation documents (made on first deploy),
#: and the enclave hosts' sockets (short path: Unix sockets allow about 100 bytes).
TRE_AUDIT_ENCLAVE_ROOT = Path(env("TRE_AUDIT_ENCLAVE_ROOT", str(VAR_DIR / "enclave-root")))
TRE_AUDIT_ENCLAVE_SOCKETS = Path(env("TRE_AUDIT_ENCLAVE_SOCKETS", str(VAR_DIR / "enclaves")))
#: Largest file a researcher may upload, in bytes.
TRE_AUDIT_MAX_UPLOAD_BYTES = env_int("TRE_AUDIT_MAX_UPLOAD_BYTES", 200 * 2**20)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 2**20
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 2**20

CELERY_BROKER_URL = env("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
# A submission waits for the broker inside the web request: give up within a few
# seconds, also on a broker that accepts connections but never answers (a socket
# timeout on every command, not only on connecting). The run is then marked and resent
# once the broker is back.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5}
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_timeout": 2,
    "socket_connect_timeout": 2,
    # An unacknowledged audit (its worker was killed) is redelivered after this many
    # seconds. It must exceed the longest audit; the heartbeat below re-queues a lost
    # audit long before it.
    "visibility_timeout": env_int("TRE_AUDIT_VISIBILITY_TIMEOUT", 3600),
}
#: A running audit's worker writes its heartbeat this often (one small UPDATE)...
TRE_AUDIT_HEARTBEAT_SECONDS = env_int("TRE_AUDIT_HEARTBEAT_SECONDS", 10)
#: ...and a run whose heartbeat is older than this has lost its worker: it is re-queued.
TRE_AUDIT_STALE_SECONDS = env_int("TRE_AUDIT_STALE_SECONDS", 60)

#: Audit sizing for the service; empty shadow count means the risk policy's.
TRE_AUDIT_SHADOW_MODELS = env_int("TRE_AUDIT_SHADOW_MODELS", 0) or None
TRE_AUDIT_SWEEP = env_bool("TRE_AUDIT_SWEEP", True)
TRE_AUDIT_JOBS = env_int("TRE_AUDIT_JOBS", 0) or None

EMAIL_BACKEND = env("TRE_AUDIT_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("TRE_AUDIT_FROM_EMAIL", "tre-audit@localhost")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tre_audit.api.exceptions.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "tre-audit API",
    "DESCRIPTION": "Submit models for a privacy audit and follow them through output checking.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
