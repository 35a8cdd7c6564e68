import pytest

from tre_audit.submissions import services


@pytest.fixture
def enqueued(monkeypatch):
    """The run ids whose audit task would have been sent."""
    sent = []
    monkeypatch.setattr(services, "_enqueue_audit", sent.append)
    return sent
