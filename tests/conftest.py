import pytest
from django.core.cache import cache

import safe_model.skops_io  # noqa: F401 (first, so skops in the tests does not import torch)
from attacks.audit import Upload
from attacks.datasets import write_famous_patient_example
from tests.postgres import PostgresError, PostgresServer

#: The intake tests' small tables and forest (tests/attacks and tests/safe_model share them);
#: a really audited request to ask records of (web and API record-query tests); and
#: the teaching MLP as a researcher submits it (the network tests of every interface).
pytest_plugins = [
    "tests.intake_support",
    "tests.nn_support",
    "tests.tre_audit.record_query_support",
]

#: Fixtures that give a test the database; with --postgres only such tests run.
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "live_server"}


def pytest_addoption(parser):
    parser.addoption(
        "--postgres",
        action="store_true",
        help="run the tests that use the database on a private PostgreSQL server",
    )


def pytest_configure(config):
    """With --postgres, start a throw-away server and point Django's database at it.

    The settings were read before this hook, so the default database's dict is changed
    in place (Django's connections hold that same dict) and the SQLite connection
    object, made but never opened, is dropped.
    """
    if not config.getoption("postgres"):
        return
    import dj_database_url
    from django.conf import settings
    from django.db import connections

    server = PostgresServer()
    config.add_cleanup(server.stop)
    try:
        url = server.start()
    except PostgresError as exc:
        raise pytest.UsageError(str(exc)) from None
    database = settings.DATABASES["default"]
    database.update(dj_database_url.parse(url), OPTIONS={})
    database["TEST"] = {**database.get("TEST", {}), "NAME": "test_tre_audit"}
    if hasattr(connections._connections, "default"):
        del connections["default"]
    # The whole server is thrown away: never drop the test database at the end (a
    # live server's or a worker's connection may still be open; that only warned).
    config.option.reuse_db = True


def pytest_collection_modifyitems(config, items):
    """With --postgres, keep only the tests that use the database (the rest ran on SQLite)."""
    if not config.getoption("postgres"):
        return
    keep, drop = [], []
    for item in items:
        uses_db = item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(
            getattr(item, "fixturenames", ())
        )
        (keep if uses_db else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    """Every test stores files in its own folder; passwords hash fast (tests only);
    throttle counts start from zero; an audit runs in one task (no broker here: the
    fan-out tests turn TRE_AUDIT_FANOUT on)."""
    cache.clear()
    settings.TRE_AUDIT_FANOUT = False
    settings.TRE_AUDIT_FILE_ROOT = tmp_path / "files"
    settings.TRE_AUDIT_ANCHOR_FILE = tmp_path / "audit-anchor.log"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def example_files(tmp_path_factory):
    """The famous-patient example (gamma=3) as the three uploads a researcher submits."""
    paths = write_famous_patient_example(tmp_path_factory.mktemp("example"), gamma=3.0)
    return {
        role: Upload(name=p.rsplit("/", 1)[1], data=open(p, "rb").read())
        for role, p in paths.items()
        if role in ("model", "train", "test")
    }


@pytest.fixture
def enqueued(monkeypatch):
    """The run ids whose audit task would have been sent (nothing reaches a broker)."""
    from tre_audit.submissions import services

    sent = []
    monkeypatch.setattr(services, "_enqueue_audit", sent.append)
    return sent
