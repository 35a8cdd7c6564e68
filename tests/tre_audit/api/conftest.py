import pytest

from tests.tre_audit.api.support import World, broker_down  # noqa: F401 (a fixture)


@pytest.fixture
def world(db):
    return World()
