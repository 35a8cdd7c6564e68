"""The one settings module of the tre-audit service.

Embedded default: SQLite and files under ``var/`` beside the checkout, Redis on
localhost, a secret key made once in ``var/secret-key``. Production: set
``DATABASE_URL`` (PostgreSQL), ``TRE_AUDIT_SECRET_KEY``, ``CELERY_BROKER_URL``,
``TRE_AUDIT_ALLOWED_HOSTS`` and, behind a TLS proxy, ``TRE_AUDIT_BEHIND_TLS=true``.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF

from tre_audit.env import env, env_bool, env_int

# Everything this service writes (database, submitted files, the anchor, keys, logs)
# is for its own user alone: 0600 files, 0700 folders.
os.umask(0o077)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("TRE_AUDIT_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
#: SQLite (./scripts/run, the tests and their workers) rather than production's PostgreSQL.
EMBEDDED = env("DATABASE_URL", "sqlite:").startswith("sqlite:")


def _embedded_secret_key(path: Path) -> str:
    """The embedded default's secret key: made once (0600), then read back."""
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(secrets.token_urlsafe(50))
    except FileExistsError:
        pass
    return path.read_text().strip()


DEBUG = env_bool("TRE_AUDIT_DEBUG", False)
if EMBEDDED:
    SECRET_KEY = env("TRE_AUDIT_SECRET_KEY", "") or _embedded_secret_key(VAR_DIR / "secret-key")
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
    "knox",  # API tokens stored hashed, with an expiry
    "axes",  # sign-in lockout after repeated failures
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the docs' JavaScript served locally: a TRE has no CDN
    "tre_audit.submissions",
    "tre_audit.reviews",
    "tre_audit.dashboard",
    "tre_audit.serving",
    "tre_audit.api",
    "tre_audit.inbox",
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
    "csp.middleware.CSPMiddleware",
    "tre_audit.submissions.middleware.AuditLogBrokenMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as axes requires
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
                "tre_audit.inbox.context_processors.inbox",
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

_VALIDATORS = "django.contrib.auth.password_validation"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"{_VALIDATORS}.UserAttributeSimilarityValidator"},
    {"NAME": f"{_VALIDATORS}.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": f"{_VALIDATORS}.CommonPasswordValidator"},
    {"NAME": f"{_VALIDATORS}.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out sign-in
    "django.contrib.auth.backends.ModelBackend",
]
#: Sign-in lockout (web page and API token alike): this many failures for one
#: username from one address locks it for the cool-off; an admin unlocks earlier
#: (Django admin, Axes' access attempts, or ``manage.py axes_reset_username``).
AXES_FAILURE_LIMIT = env_int("TRE_AUDIT_LOCKOUT_FAILURES", 5)
_LOCKOUT_MINUTES = env_int("TRE_AUDIT_LOCKOUT_MINUTES", 15)
AXES_COOLOFF_TIME = timedelta(minutes=_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_CALLABLE = "tre_audit.api.lockout.lockout_response"
AXES_COOLOFF_MESSAGE = f"Too many failed sign-ins: try again in {_LOCKOUT_MINUTES} minutes."

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
#: Secure inference with a dealer (docs/mpc-inference.md): the address partners reach
#: the model owner's and the dealer's hosts at, which they also listen on (a port each,
#: chosen per endpoint). TRE_AUDIT_MPC_DEALER ("host:port") names a dealer the TRE runs
#: on a separate host instead of one started here per endpoint (empty, the default); that
#: dealer must present the endpoint's dealer certificate, which deploying writes to
#: var/mpc/<endpoint>/tls/dealer.pem and .key for the operator to copy there.
TRE_AUDIT_MPC_HOST = env("TRE_AUDIT_MPC_HOST", "127.0.0.1")
TRE_AUDIT_MPC_DEALER = env("TRE_AUDIT_MPC_DEALER", "")
#: Largest file a researcher may upload, in bytes (safe_model.loader.DEFAULT_MAX_BYTES too).
TRE_AUDIT_MAX_UPLOAD_BYTES = env_int("TRE_AUDIT_MAX_UPLOAD_BYTES", 200 * 2**20)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 2**20
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 2**20

CELERY_BROKER_URL = env("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
# A fanned-out audit's rounds are chords, which count their finished shadows here:
# results are small JSON (each shadow's numbers go to the database), kept a day.
CELERY_RESULT_BACKEND = (
    env("CELERY_RESULT_BACKEND", "") or CELERY_BROKER_URL.rsplit("/", 1)[0] + "/2"
)
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = timedelta(days=1)
# Workers take both queues unless started with -Q: audits (and their rounds) on
# "celery", one task per shadow model on "shadows" (see docker/README.md).
CELERY_TASK_QUEUES = {"celery": {}, "shadows": {}}
CELERY_TASK_ROUTES = {"submissions.audit_shadow_train": {"queue": "shadows"}}
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
    # ...looked for every 10 s (kombu's default scans every 100 s), so that a shadow
    # whose worker was killed is trained again soon after its timeout.
    "unacked_restore_throttle": 1,
}
#: A running audit's worker writes its heartbeat this often (one small UPDATE)...
TRE_AUDIT_HEARTBEAT_SECONDS = env_int("TRE_AUDIT_HEARTBEAT_SECONDS", 10)
#: ...and a run whose heartbeat is older than this has lost its worker: it is re-queued.
TRE_AUDIT_STALE_SECONDS = env_int("TRE_AUDIT_STALE_SECONDS", 60)

#: Audit sizing for the service; empty shadow count means the risk policy's.
TRE_AUDIT_SHADOW_MODELS = env_int("TRE_AUDIT_SHADOW_MODELS", 0) or None
TRE_AUDIT_SWEEP = env_bool("TRE_AUDIT_SWEEP", True)
TRE_AUDIT_JOBS = env_int("TRE_AUDIT_JOBS", 0) or None
#: Train an audit's shadow models as Celery tasks on the "shadows" queue, any worker
#: taking one each; false audits in one task, its shadows in that worker's processes.
TRE_AUDIT_FANOUT = env_bool("TRE_AUDIT_FANOUT", True)
#: A fanned-out run whose shadows wait in the queue behind other audits is not lost
#: until it has gone this many seconds without a sign of life.
TRE_AUDIT_QUEUE_WAIT_SECONDS = env_int("TRE_AUDIT_QUEUE_WAIT_SECONDS", 24 * 3600)

#: E-mail: "log" (the default) appends each message to TRE_AUDIT_MAIL_LOG, where
#: ./scripts/run says; "smtp" sends it through TRE_AUDIT_EMAIL_HOST; "console" prints
#: it on the process's stdout; or a Django backend's dotted path.
_EMAIL_BACKENDS = {
    "log": "tre_audit.inbox.mail.MailLogBackend",
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "console": "django.core.mail.backends.console.EmailBackend",
}
_email_backend = env("TRE_AUDIT_EMAIL_BACKEND", "log")
EMAIL_BACKEND = _EMAIL_BACKENDS.get(_email_backend, _email_backend)
TRE_AUDIT_MAIL_LOG = Path(env("TRE_AUDIT_MAIL_LOG", str(VAR_DIR / "log" / "mail.log")))
if _email_backend == "smtp":
    EMAIL_HOST = env("TRE_AUDIT_EMAIL_HOST", hint="SMTP needs the mail server's host name.")
    EMAIL_PORT = env_int("TRE_AUDIT_EMAIL_PORT", 587)
    EMAIL_HOST_USER = env("TRE_AUDIT_EMAIL_USER", "")
    EMAIL_HOST_PASSWORD = env("TRE_AUDIT_EMAIL_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("TRE_AUDIT_EMAIL_TLS", True)  # STARTTLS on the submission port
    EMAIL_USE_SSL = env_bool("TRE_AUDIT_EMAIL_SSL", False)  # TLS from the start (port 465)
    # A mail server that hangs delays the page that sent the message this long at most.
    EMAIL_TIMEOUT = env_int("TRE_AUDIT_EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env("TRE_AUDIT_FROM_EMAIL", "tre-audit@localhost")
#: The service's address as people reach it: the links in e-mails start with it.
TRE_AUDIT_BASE_URL = env("TRE_AUDIT_BASE_URL", "http://127.0.0.1:8000")

# Sessions end after a working day (not Django's 14 days): a shared TRE desktop
# left signed in does not stay a way in overnight.
SESSION_COOKIE_AGE = env_int("TRE_AUDIT_SESSION_HOURS", 8) * 3600
# Django's defaults, relied on (tests/tre_audit/test_security.py): HttpOnly session
# cookie, X-Frame-Options DENY, nosniff, same-origin referrer and opener policies.
#: Behind a TLS-terminating reverse proxy that sets ``X-Forwarded-Proto: https``
#: (and strips it from what clients send): HTTPS only, secure cookies, HSTS.
BEHIND_TLS = env_bool("TRE_AUDIT_BEHIND_TLS", False)
if BEHIND_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("TRE_AUDIT_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
# No inline script or style without the page's nonce; the API docs page adds its own.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Errors reach the process's stderr with DEBUG off too (Django's console handler
# is DEBUG-only); tracebacks name code, never show locals.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
#: Throttle counts shared by all web processes (else each process counts alone).
if env("TRE_AUDIT_CACHE_URL", ""):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env("TRE_AUDIT_CACHE_URL"),
        }
    }

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env("TRE_AUDIT_API_RATE", "600/min"),
        "token": env("TRE_AUDIT_TOKEN_RATE", "5/min"),  # per address and username
        "record_query": env("TRE_AUDIT_RECORD_QUERY_RATE", "30/hour"),  # each trains shadows
        "password_reset": env("TRE_AUDIT_PASSWORD_RESET_RATE", "5/hour"),  # per address
    },
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tre_audit.api.exceptions.api_exception_handler",
}
#: API tokens: only a hash is stored; each expires (or on logout, or a password change).
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=env_int("TRE_AUDIT_TOKEN_HOURS", 10)),
    "AUTO_REFRESH": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "tre-audit API",
    "DESCRIPTION": "Submit models for a privacy audit and follow them through output checking.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # two models have a "kind": each choice set named for what it is
    "ENUM_NAME_OVERRIDES": {
        "KindEnum": "tre_audit.serving.enums.EndpointKind",
        "NotificationKindEnum": "tre_audit.inbox.enums.Kind",
    },
}
