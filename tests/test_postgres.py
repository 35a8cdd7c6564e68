"""The test harness's private PostgreSQL server (tests/postgres.py)."""

import psycopg
import pytest
from django.db import connection

from tests.postgres import PostgresServer


def test_the_private_server_answers_and_leaves_nothing_behind():
    server = PostgresServer()
    try:
        url = server.start()
        with psycopg.connect(url, connect_timeout=30) as conn:
            assert conn.execute("select 1 + 1").fetchone() == (2,)
            fsync = conn.execute("show fsync").fetchone()[0]
    finally:
        server.stop()
    assert fsync == "off"
    assert not server.root.exists()
    server.stop()  # a second stop is harmless


def test_stop_removes_the_directory_of_a_server_that_never_started():
    server = PostgresServer()
    server.stop()
    assert not server.root.exists()


@pytest.mark.django_db
def test_database_tests_run_on_the_database_asked_for(request):
    expected = "postgresql" if request.config.getoption("postgres") else "sqlite"
    assert connection.vendor == expected
