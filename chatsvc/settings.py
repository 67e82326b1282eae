"""Settings for chatsvc, read from the environment (README "Configuration" lists every variable)."""

import hashlib
import os
import tempfile
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def env_optional(name: str, cast: type, default):
    """A setting that may be None: `none` (any case) or an empty value means None."""
    raw = env.str(name, default=None)
    if raw is None:
        return default
    if raw.strip().lower() in ("", "none"):
        return None
    try:
        return cast(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a {cast.__name__} or 'none', not {raw!r}.") from None


# --- Core -------------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)  # `make run` and the tests turn it on
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG:
    if not SECRET_KEY:
        raise ImproperlyConfigured("DEBUG=false needs SECRET_KEY: set it to a long random string.")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("DEBUG=false needs ALLOWED_HOSTS: the host names this service answers to.")
if not SECRET_KEY and set(ALLOWED_HOSTS) - {"localhost", "127.0.0.1", "[::1]"}:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set when ALLOWED_HOSTS names a host beyond this machine "
        "(the development key is public); and set DEBUG=false there."
    )
SECRET_KEY = SECRET_KEY or "django-insecure-development-only-key-do-not-deploy"
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS: what a deployment behind a TLS proxy sets (`manage.py check --deploy` lists what is missing)
SECURE_PROXY_SSL_HEADER = env.tuple("SECURE_PROXY_SSL_HEADER", default=None)
if SECURE_PROXY_SSL_HEADER is not None and len(SECURE_PROXY_SSL_HEADER) != 2:
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER must be a header and the value meaning HTTPS: HTTP_X_FORWARDED_PROTO,https."
    )
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]  # probes and scrapers reach the process directly
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "servestatic",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "conversations",
    "quota",
    "ai",
    "chatsvc",
]

# Every middleware here is async-native (chatsvc.middleware explains why the stock ones are wrapped),
# and none buffers or compresses a response.
MIDDLEWARE = [
    "chatsvc.middleware.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "chatsvc.middleware.SessionMiddleware",
    "chatsvc.middleware.CsrfViewMiddleware",
    "chatsvc.middleware.AuthenticationMiddleware",
    "chatsvc.middleware.MessageMiddleware",
    "chatsvc.middleware.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsvc.urls"
ASGI_APPLICATION = "chatsvc.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
# PostgreSQL (psycopg 3 with Django's connection pool) in production and tests; SQLite for `make run`.
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "chatsvc.database"  # Django's, two round trips fewer (its docstring)
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps connections; Django must not
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
        "timeout": env.int("DATABASE_POOL_TIMEOUT", default=10),
        # A connection idle this long is closed, one per such period, down to min_size.
        "max_idle": env.float("DATABASE_POOL_MAX_IDLE", default=600),
    }
    # The pool checks a connection as it hands it out (`chatsvc.database.base.check_connection`): after
    # a database restart, no request gets a dead one.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Nothing waits forever: a lock wait or a statement longer than these fails (seconds; 0: no limit).
    # Options given in DATABASE_URL (`?options=…`) come last, so they win.
    DATABASES["default"]["OPTIONS"]["options"] = " ".join(
        [
            f"-c lock_timeout={env.float('DATABASE_LOCK_TIMEOUT', default=10) * 1000:.0f}",
            f"-c statement_timeout={env.float('DATABASE_STATEMENT_TIMEOUT', default=30) * 1000:.0f}",
            DATABASES["default"]["OPTIONS"].get("options", ""),
        ]
    ).strip()
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# How long the end of an answer and its heartbeat retry a lost database connection (seconds).
DATABASE_RETRY_SECONDS = env.float("DATABASE_RETRY_SECONDS", default=30.0)

# --- Channels (REDIS_URL is optional: the layer for signals across processes) -------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Redis's publish/subscribe: a message is one PUBLISH, pushed at once to the process that listens
# (ai.relay: a process's channel and its answers' groups), where channels_redis's list-based layer
# takes four round trips to send and a blocking pop to receive (`make bench`'s R: a remote reader's lag
# p99 ~130 → ~40 ms). Nothing is kept for a process not listening, which the relay does not need: a
# reply that never comes is an owner gone. The layer sends one command at a time: an unreachable Redis
# must fail each fast. Under an alias of its own, not "default": no consumer takes a channel of its own
# (a socket, even a refused one, would cost a SUBSCRIBE); without REDIS_URL there is nothing to reach.
CHANNEL_LAYERS = (
    {
        "relay": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_connect_timeout": 2, "socket_timeout": 5}]},
        }
    }
    if REDIS_URL
    else {}
)

# --- Authentication, i18n, static files -------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
SERVESTATIC_USE_FINDERS = True  # serve app static files without `collectstatic` too (make run, tests)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "servestatic.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Django REST framework and the OpenAPI schema ---------------------------------------------
REST_FRAMEWORK = {
    # Token first: a request without credentials gets 401 with `WWW-Authenticate: Token`.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "chatsvc.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "chatsvc.api.PageNumberPagination",
    "EXCEPTION_HANDLER": "chatsvc.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "chatsvc API",
    "DESCRIPTION": "Conversations, quota and streaming AI chat (Server-Sent Events).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- AI ---------------------------------------------------------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env_optional("OPENAI_BASE_URL", str, None)
OPENAI_MODEL = env.str("OPENAI_MODEL", default="gpt-4o-mini")
OPENAI_TIMEOUT = env.float("OPENAI_TIMEOUT", default=60.0)

try:
    AI_ADAPTERS = env.json(
        "AI_ADAPTERS",
        default={
            "default": {"BACKEND": "ai.adapters.mock.MockAdapter", "OPTIONS": {"delay": 0.02}},
            "openai": {
                "BACKEND": "ai.adapters.openai.OpenAIAdapter",
                "OPTIONS": {
                    "model": OPENAI_MODEL,
                    "api_key": OPENAI_API_KEY,
                    "base_url": OPENAI_BASE_URL,
                    "timeout": OPENAI_TIMEOUT,
                },
            },
        },
    )
except ValueError as error:
    raise ImproperlyConfigured(f"AI_ADAPTERS is not a valid JSON object: {error}") from None
if not isinstance(AI_ADAPTERS, dict):
    raise ImproperlyConfigured("AI_ADAPTERS must be a JSON object of alias → {BACKEND, OPTIONS}.")
AI_DEFAULT_ADAPTER = env.str("AI_DEFAULT_ADAPTER", default="default")
AI_CONTEXT_MESSAGES = env.int("AI_CONTEXT_MESSAGES", default=10)
AI_SYSTEM_PROMPT = env_optional("AI_SYSTEM_PROMPT", str, None)
AI_MAX_MESSAGE_CHARS = env.int("AI_MAX_MESSAGE_CHARS", default=32000)
AI_STREAM_KEEPALIVE = env.float("AI_STREAM_KEEPALIVE", default=15.0)
# Live answers (API.md "Live answers"): what a hang-up of the first reader does, how long an ended
# answer's events stay readable, how long a reader waits for a silent owner, how long a key is kept.
AI_STREAM_ON_DISCONNECT = env.str("AI_STREAM_ON_DISCONNECT", default="continue")
AI_STREAM_REPLAY_TTL = env.float("AI_STREAM_REPLAY_TTL", default=600.0)
AI_STREAM_OWNER_TIMEOUT = env.float("AI_STREAM_OWNER_TIMEOUT", default=10.0)
AI_IDEMPOTENCY_TTL = env.float("AI_IDEMPOTENCY_TTL", default=86400.0)
# A start that would wait longer than this for a database connection is refused: 503 `overloaded`.
AI_START_QUEUE_TIMEOUT = env.float("AI_START_QUEUE_TIMEOUT", default=15.0)

# --- Quota ------------------------------------------------------------------------------------
QUOTA_PERIOD = env.str("QUOTA_PERIOD", default="day")
QUOTA_DEFAULT_REQUEST_LIMIT = env_optional("QUOTA_DEFAULT_REQUEST_LIMIT", int, 100)
QUOTA_DEFAULT_TOKEN_LIMIT = env_optional("QUOTA_DEFAULT_TOKEN_LIMIT", int, None)
QUOTA_RESERVATION_TTL = env.float("QUOTA_RESERVATION_TTL", default=600.0)
QUOTA_CHARGE_INTERRUPTED = env.bool("QUOTA_CHARGE_INTERRUPTED", default=False)


# --- The server process: CPython's cycle collector (chatsvc.asgi.tune_the_collector) ---------------
def _gc_threshold(raw: str) -> tuple[int, int, int]:
    """`gc.set_threshold`'s three numbers, each at least 1 (0 would turn the collector, or the
    pacing of its older generations, off)."""
    try:
        threshold = tuple(int(part) for part in raw.split(","))
    except ValueError:
        threshold = ()
    if len(threshold) != 3 or min(threshold) < 1:
        raise ImproperlyConfigured(
            f"GC_THRESHOLD must be three whole numbers of at least 1 (gc.set_threshold), not {raw!r}."
        )
    return threshold


GC_THRESHOLD = _gc_threshold(env.str("GC_THRESHOLD", default="2000,10,100"))

# --- Metrics (chatsvc.metrics): GET /metrics for staff sessions and `Authorization: Bearer <METRICS_TOKEN>`
METRICS_TOKEN = env_optional("METRICS_TOKEN", str, None)
METRICS_ENABLED = env.bool("METRICS_ENABLED", default=True)  # false: nothing is counted
# Prometheus' multiprocess mode: every server process of a deployment writes its metrics' files in this
# directory, and a scrape of any of them sums them all. Default: one in the temp directory per checkout
# and database (the processes of one deployment share it, two deployments do not).
_deployment = "|".join(str(DATABASES["default"].get(key, "")) for key in ("ENGINE", "HOST", "PORT", "NAME"))
METRICS_DIR = env.str("METRICS_DIR", default="") or str(
    Path(tempfile.gettempdir())
    / f"chatsvc-metrics-{hashlib.sha256(f'{BASE_DIR}|{_deployment}'.encode()).hexdigest()[:12]}"
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR  # prometheus_client reads it when first imported

# --- Logging: one line per event to stderr; operators read the `ai.stream` lines ---------------
# LOG_FORMAT=json: every line one JSON object (python-json-logger): time, level, logger, message, and the
# record's extra fields (the stream line's user, adapter, outcome …) as keys of their own.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'text' or 'json', not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # The HTTP clients under the OpenAI SDK log every request at INFO; the stream's own line says more.
        **{name: {"level": "WARNING"} for name in ("httpx", "httpx2", "httpcore")},
        # Django's and uvicorn's loggers come with handlers of their own: theirs go through the one above.
        **{name: {"propagate": True} for name in ("django", "django.server", "uvicorn", "uvicorn.access")},
    },
}
